import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// Data moved between guest memory and host files with engine memory bounded by a small
/// constant per call, whatever length the guest asks for: a guest buffer is served in pieces,
/// each either a run of contiguous guest frames used in place, or at most
/// `AddressSpace.bounceLimit` bytes copied through a bounce buffer.
extension ProcessVM {
    /// A transfer over guest range [address, address + length) (Linux caps one at
    /// 0x7ffff000 bytes), readable, and writable when `writable`, made piece by piece by
    /// `body`, which gets each piece and the bytes already moved, and answers with bytes
    /// moved or -errno. Stops at the first short piece, as one host call would; a fault or an
    /// error after some bytes moved gives their count, as Linux does.
    func transfer(_ address: UInt64, _ length: UInt64, writable: Bool,
                  _ body: (UnsafeMutableRawBufferPointer, _ done: Int) -> Int) -> SyscallOutcome {
        let length = Int(min(length, 0x7FFF_F000))
        if length == 0 { return withBuffer(address, 0, writable: writable) { body($0, 0) } }
        var done = 0
        while done < length {
            let (start, overflow) = address.addingReportingOverflow(UInt64(done))
            let size = overflow ? length - done : space.pieceLength(at: start, remaining: length - done)
            // Each piece is checked guest memory (or a bounce buffer) valid while `body` runs.
            guard let moved = space.withUserBuffer(start, size, writable: writable, { body($0, done) }) else {
                return done > 0 ? .int(done) : .error(.EFAULT)
            }
            if moved < 0 { return done > 0 ? .int(done) : .int(moved) }
            done += moved
            if moved < size { break }
        }
        return .int(done)
    }

    /// read(2) into a guest buffer: the first piece waits (interruptibly) when the guest
    /// waits; later pieces take only what is there already, as one read returns what the
    /// file has.
    func readIntoGuest(_ fd: Int32, _ address: UInt64, _ length: UInt64, mayWait: Bool = true) -> SyscallOutcome {
        transfer(address, length, writable: true) { piece, done in
            done == 0 && mayWait ? waitingTransfer(fd, events: Int16(POLLIN)) { files.read(fd, into: piece) } : files.read(fd, into: piece)
        }
    }

    /// write(2) from a guest buffer: all of it when the guest waits (see `writeFully`).
    func writeFromGuest(_ fd: Int32, _ address: UInt64, _ length: UInt64) -> SyscallOutcome {
        transfer(address, length, writable: false) { piece, _ in writeFully(fd, UnsafeRawBufferPointer(piece)) }
    }
}

extension AddressSpace {
    /// The most bytes the engine copies through a bounce buffer at a time (a non-contiguous
    /// guest buffer); at least PIPE_BUF, so that a pipe write that must be atomic is one piece.
    static let bounceLimit = 64 << 10

    /// How long the next piece of a transfer from `address` is: the whole run of contiguous
    /// frames there when it is at least `bounceLimit` long (used in place), else at most
    /// `bounceLimit` bytes.
    func pieceLength(at address: UInt64, remaining: Int) -> Int {
        let bounced = min(remaining, Self.bounceLimit)
        let run = contiguousLength(from: address, upTo: remaining)
        return run >= bounced ? run : bounced
    }

    /// How many bytes from `address` (at most `limit`) lie in guest frames that follow each
    /// other; 0 when the first page is unmapped.
    func contiguousLength(from address: UInt64, upTo limit: Int) -> Int {
        guard let first = tables.translate(Self.pageDown(address))?.frame else { return 0 }
        var length = Int(Self.pageSize - (address & (Self.pageSize - 1)))
        var page = Self.pageDown(address)
        while length < limit {
            let (next, overflow) = page.addingReportingOverflow(Self.pageSize)
            guard !overflow, tables.translate(next)?.frame == first + (next - Self.pageDown(address)) else { break }
            page = next
            length += Int(Self.pageSize)
        }
        return min(length, limit)
    }

    /// Reads `length` bytes of host file `fd` from `offset` into the pages just mapped at
    /// [address, address + length), straight into their frames, one pread per run of
    /// contiguous frames: a file mmap costs the engine no memory of its own. Past the file's
    /// end the pages keep their zeros. False when the file cannot be read.
    func readFile(_ fd: Int32, offset: UInt64, into address: UInt64, length: UInt64) -> Bool {
        var done: UInt64 = 0
        while done < length {
            let run = UInt64(contiguousLength(from: address + done, upTo: Int(length - done)))
            // The run's frames follow each other and `pointer(physical:length:)` checks that
            // all of them lie inside guest memory, so pread may fill `run` bytes from `target`.
            guard run > 0, let frame = tables.translate(address + done)?.frame,
                  let target = memory.pointer(physical: frame, length: Int(run)) else { return false }
            let (position, overflow) = offset.addingReportingOverflow(done)
            guard !overflow, position <= UInt64(Int64.max) else { return false }
            guard let count = try? retryingSyscall("pread(mapped file)", { pread(fd, target, Int(run), off_t(position)) }) else {
                return false
            }
            if count < Int(run) { return true }
            done += run
        }
        return true
    }
}
