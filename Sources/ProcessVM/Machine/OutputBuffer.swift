#if canImport(Glibc)
import Glibc
#endif

/// Standard output and error buffered in the program, so that a write to them costs no exit.
///
/// On a machine where an exit costs 100-200 µs, `busybox echo hi`'s one `write` is a quarter of
/// its exits. When the engine knows that a write to descriptor 1 or 2 can neither wait nor fail
/// in a way the program would see (the descriptor is a regular file or an allowlisted device,
/// such as a container's log, opened by this process alone, and the process has one thread), it
/// sets that descriptor's bit in the buffer's `enabled` word. The system-call stub then answers
/// such a `write` itself (`routine`): it appends a record (descriptor, length, bytes) to the
/// buffer in the process's own mailbox page and returns the length, with no exit and no post to
/// the poller. The engine writes the records out (`ProcessVM.drainOutputBuffer`) before it
/// serves any other call of the process, and when the program stops or ends, so what the
/// program can observe (through any call) and the order of its output are as if each write
/// had been made at once. What differs: the bytes reach the file when the program next makes a
/// call that reaches the engine, or ends, rather than at the write; a program that writes and
/// then computes for long without any call delivers that output late, as a C program's stdio
/// does when its output is a file.
///
/// The buffer is the guest's: the engine takes the used part with one copy, checks every
/// record (a descriptor it enabled, a length inside the copy) and stops at the first that is
/// not, so a program that scribbles on it only garbles or loses its own output.
enum OutputBuffer {
    /// Guest address of the buffer: the upper half of the mailbox page (user read-write,
    /// the VM's own page, never shared with a parent).
    static let base: UInt64 = SystemArea.mailbox + 0x800
    /// Bytes of records in use (u32).
    static let used: UInt64 = base
    /// Bit n set: writes to descriptor n may be buffered (n is 1 or 2; u32).
    static let enabled: UInt64 = base + 4
    /// Where the routine keeps RCX, RSI and RDI while it copies (its rep movsb uses them).
    static let savedRCX: UInt64 = base + 8
    static let savedRSI: UInt64 = base + 16
    static let savedRDI: UInt64 = base + 24
    /// The records: each a u32 (descriptor | length << 8), then the bytes.
    static let data: UInt64 = base + 0x40
    static let capacity = 0x800 - 0x40
    static let headerBytes = 4
    /// The longest write answered in the program; a longer one takes the usual way (after the
    /// buffer is written out).
    static let largestRecord = capacity - headerBytes

    /// Where the routine lives in the stub page.
    static let routine: UInt64 = SystemArea.stubPage + 0x700

    /// The routine, entered from the stub's start with RAX = 1 (write), RDI, RSI, RDX the
    /// call's arguments, RCX and R11 the return RIP and RFLAGS: it either answers the call and
    /// jumps to the stub's return (`returnTarget`), or, with RAX = 1 again and every other
    /// register as it came, goes back to the stub (`slowTarget`). Only its copy instruction
    /// (`copyOffset`) touches the program's memory; a fault there is answered EFAULT
    /// (`ProcessVM.answerFaultInBufferedWrite`). It reads `used` once.
    static func assemble(returnTarget: UInt64, slowTarget: UInt64) -> (code: [UInt8], copyOffset: Int) {
        var a = StubAssembler(origin: Int(routine - SystemArea.stubPage))
        a.labels["return"] = Int(returnTarget - SystemArea.stubPage)
        a.labels["afterWrite"] = Int(slowTarget - SystemArea.stubPage)
        func abs32(_ address: UInt64) -> [UInt8] { UInt32(address).littleEndianBytes }
        // Descriptor 1 or 2, enabled by the engine.
        a.emit([0x48, 0x8D, 0x47, 0xFF]) // lea rax, [rdi - 1]
        a.emit([0x48, 0x83, 0xF8, 0x01]) // cmp rax, 1
        a.jump(.above, to: "slow")
        a.emit([0x0F, 0xA3, 0x3C, 0x25] + abs32(enabled)) // bt dword [enabled], edi
        a.jump(.aboveOrEqual, to: "slow") // CF clear: not enabled
        // 1 <= count <= largestRecord.
        a.emit([0x48, 0x8D, 0x42, 0xFF]) // lea rax, [rdx - 1]
        a.emit([0x48, 0x3D] + UInt32(largestRecord - 1).littleEndianBytes) // cmp rax, largestRecord - 1
        a.jump(.above, to: "slow")
        // Keep what the copy uses.
        a.emit([0x48, 0x89, 0x0C, 0x25] + abs32(savedRCX)) // mov [savedRCX], rcx
        a.emit([0x48, 0x89, 0x34, 0x25] + abs32(savedRSI)) // mov [savedRSI], rsi
        a.emit([0x48, 0x89, 0x3C, 0x25] + abs32(savedRDI)) // mov [savedRDI], rdi
        // Room for the record: used + 4 + count <= capacity (used read once, zero-extended).
        a.emit([0x8B, 0x04, 0x25] + abs32(used)) // mov eax, [used]
        a.emit([0x48, 0x8D, 0x4C, 0x10, 0x04]) // lea rcx, [rax + rdx + 4]
        a.emit([0x48, 0x81, 0xF9] + UInt32(capacity).littleEndianBytes) // cmp rcx, capacity
        a.jump(.above, to: "full")
        // Header: descriptor | count << 8, at data + used.
        a.emit([0x89, 0xD1]) // mov ecx, edx
        a.emit([0xC1, 0xE1, 0x08]) // shl ecx, 8
        a.emit([0x09, 0xF9]) // or ecx, edi
        a.emit([0x48, 0x8D, 0xB8] + abs32(data)) // lea rdi, [rax + data]
        a.emit([0x89, 0x0F]) // mov [rdi], ecx
        a.emit([0x48, 0x83, 0xC7, 0x04]) // add rdi, 4
        a.emit([0x48, 0x89, 0xD1]) // mov rcx, rdx
        a.emit([0xFC]) // cld (a rewritten call comes with the program's own flags)
        let copyOffset = a.bytes.count
        a.emit([0xF3, 0xA4]) // rep movsb
        // Commit, restore, answer the count.
        a.emit([0x8D, 0x44, 0x10, 0x04]) // lea eax, [rax + rdx + 4]
        a.emit([0x89, 0x04, 0x25] + abs32(used)) // mov [used], eax
        a.emit([0x48, 0x8B, 0x0C, 0x25] + abs32(savedRCX)) // mov rcx, [savedRCX]
        a.emit([0x48, 0x8B, 0x34, 0x25] + abs32(savedRSI)) // mov rsi, [savedRSI]
        a.emit([0x48, 0x8B, 0x3C, 0x25] + abs32(savedRDI)) // mov rdi, [savedRDI]
        a.emit([0x48, 0x89, 0xD0]) // mov rax, rdx
        a.jump(.always, to: "return")
        a.label("full")
        a.emit([0x48, 0x8B, 0x0C, 0x25] + abs32(savedRCX)) // mov rcx, [savedRCX]
        a.label("slow")
        a.emit([0xB8, 0x01, 0x00, 0x00, 0x00]) // mov eax, SYS_write
        a.jump(.always, to: "afterWrite")
        return (a.finish(), copyOffset)
    }

    /// The record header for `count` bytes to `descriptor`.
    static func header(descriptor: Int32, count: Int) -> UInt32 { UInt32(descriptor) | UInt32(count) << 8 }
}

extension ProcessVM {
    /// The descriptors whose writes the program may buffer now (bit n for descriptor n): a
    /// regular file or allowlisted device (`HostAccess.neverWaits`, which never waits), not a
    /// terminal, opened by this process alone, in a process with one thread.
    func bufferableOutputDescriptors() -> UInt32 {
        guard configuration.buffersOutput, threads.isEmpty else { return 0 }
        return (files.mayBufferWrites(1) ? 1 << 1 : 0) | (files.mayBufferWrites(2) ? 1 << 2 : 0)
    }

    /// Sets the buffer's `enabled` word when what may be buffered changed (after each served
    /// call: a dup2, a close, an exec or a new thread may change it), or with `reset`, empties
    /// the buffer too (a new process in this VM).
    func updateOutputBuffer(reset: Bool = false) {
        let bits = bufferableOutputDescriptors()
        guard reset || bits != outputBufferDescriptors, let page = mailbox else { return }
        outputBufferDescriptors = bits
        let offset = Int(OutputBuffer.base - SystemArea.mailbox)
        // unsafe: `page` is the VM's own mapped mailbox page and both words lie inside it.
        if reset { page.storeBytes(of: 0, toByteOffset: offset, as: UInt32.self) }
        page.storeBytes(of: bits.littleEndian, toByteOffset: offset + 4, as: UInt32.self)
    }

    /// Writes out what the program buffered, in order, and empties the buffer. Called before
    /// any call is served and when the program stops or ends; the program is not running then
    /// (its only thread is in the engine, or waits on the poller).
    func drainOutputBuffer() {
        let enabled = outputBufferDescriptors
        guard enabled != 0, let page = mailbox else { return }
        let offset = Int(OutputBuffer.base - SystemArea.mailbox)
        // unsafe: the words and the data area lie inside the VM's mapped mailbox page.
        let used = Int(UInt32(littleEndian: page.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
        guard used != 0 else { return }
        page.storeBytes(of: 0, toByteOffset: offset, as: UInt32.self)
        let length = min(used, OutputBuffer.capacity)
        // unsafe: `copy` and the mailbox's data area are both `capacity` bytes and length <= capacity; each record is checked to lie inside `length`.
        withUnsafeTemporaryAllocation(byteCount: OutputBuffer.capacity, alignment: 8) { copy in
            // One read of the guest's bytes: what is checked below is what is written.
            copy.baseAddress!.copyMemory(from: page + offset + Int(OutputBuffer.data - OutputBuffer.base), byteCount: length)
            var position = 0
            // Records are packed down over their headers as they are read, so that
            // consecutive records to one descriptor go out in one write.
            var packed = 0
            var run: (descriptor: Int32, start: Int)?
            func flush() {
                guard let current = run else { return }
                writeBuffered(current.descriptor, UnsafeRawBufferPointer(rebasing: copy[current.start..<packed]))
                run = nil
            }
            while position + OutputBuffer.headerBytes <= length {
                let header = UInt32(littleEndian: copy.loadUnaligned(fromByteOffset: position, as: UInt32.self))
                let descriptor = Int32(header & 0xFF), count = Int(header >> 8)
                let start = position + OutputBuffer.headerBytes
                guard descriptor == 1 || descriptor == 2, enabled & (1 << UInt32(descriptor)) != 0, count >= 1, count <= length - start else {
                    outputBufferRefusals += 1
                    break
                }
                if let current = run, current.descriptor != descriptor { flush() }
                if run == nil { run = (descriptor, packed) }
                // The ranges may overlap (packed < start): memmove.
                memmove(copy.baseAddress! + packed, copy.baseAddress! + start, count)
                packed += count
                position = start + count
            }
            flush()
        }
        outputBufferDrains += 1
    }

    /// Writes `bytes` to `descriptor` as the program's write would have, all of it (the file
    /// never waits); a failure (a full disk) loses the rest, as it would a log's.
    private func writeBuffered(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer) {
        var done = 0
        while done < bytes.count {
            let wrote = files.write(descriptor, from: UnsafeRawBufferPointer(rebasing: bytes[done...]))
            guard wrote > 0 else { return }
            done += wrote
        }
    }

    /// A fault in one of the stub page's routines where it touches the program's buffer (the
    /// buffered write's copy, the program name's two stores: the program passed a buffer it
    /// cannot read or write) is answered EFAULT, as Linux answers such a call: the registers
    /// the write routine saved go back, and the program resumes at the stub's return. True
    /// when the fault was that.
    func answerFaultInGuestRoutine(vector: UInt8) -> Bool {
        guard vector == 13 || vector == 14 else { return false }
        let hasErrorCode = X86.vectorsWithErrorCode.contains(vector)
        let frameSize = hasErrorCode ? 48 : 40
        // unsafe: the exception stack's top page is the VM's own; the frame lies at its end.
        let frame = memory.pointer(physical: exceptionStackFrame, length: 4096)! + (4096 - frameSize) + (hasErrorCode ? 8 : 0)
        let rip = frame.load(as: UInt64.self)
        var regs = vcpu.syncRegisters.pointee.regs
        if rip == OutputBuffer.routine + UInt64(SystemArea.bufferedWriteCopyOffset) {
            guard let page = mailbox else { return false }
            func saved(_ address: UInt64) -> UInt64 {
                // unsafe: the saved words lie inside the mapped mailbox page.
                UInt64(littleEndian: page.loadUnaligned(fromByteOffset: Int(address - SystemArea.mailbox), as: UInt64.self))
            }
            regs.rcx = saved(OutputBuffer.savedRCX)
            regs.rsi = saved(OutputBuffer.savedRSI)
            regs.rdi = saved(OutputBuffer.savedRDI)
        } else if !SystemArea.programNameStoreOffsets.contains(where: { rip == ProgramNameRoutine.address + UInt64($0) }) {
            return false
        }
        regs.rax = UInt64(bitPattern: -Int64(LinuxErrno.EFAULT.rawValue))
        regs.rip = SystemArea.syscallReturn
        regs.rflags = frame.load(fromByteOffset: 16, as: UInt64.self)
        regs.rsp = frame.load(fromByteOffset: 24, as: UInt64.self)
        resumeInUserMode(with: regs)
        return true
    }

    /// Writes the process's name where the program-name routine reads it.
    func writeProgramNameWords() {
        // On the fork path: 16 bytes on the stack, no array.
        // unsafe: 16 stack bytes, used only inside the closure; loaderWrite copies them.
        withUnsafeTemporaryAllocation(byteCount: 16, alignment: 8) { words in
            words.initializeMemory(as: UInt8.self, repeating: 0)
            let kept = min(programName.count, 15)
            // unsafe: kept <= 15 fits the 16 bytes and kept <= programName.count; kept > 0, so the array has storage to point at.
            if kept > 0 { programName.withUnsafeBytes { words.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: kept) } }
            space.loaderWrite(SystemArea.programNameWords, UnsafeRawBufferPointer(words))
        }
    }
}
