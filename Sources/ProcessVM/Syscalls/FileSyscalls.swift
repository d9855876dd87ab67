import Foundation
import Glibc

/// File system calls: argument checking and guest-memory access here, the file semantics in
/// `GuestFiles` (confined to the rootfs, Linux results).
extension ProcessVM {
    static let atCurrentDirectory: Int32 = -100
    /// Linux's PATH_MAX: no path or link text the engine returns is longer, so a guest buffer
    /// for one is used only this far (the rest of a larger one is never touched).
    static let pathMax: UInt64 = 4096

    static let fileSyscalls: [(Int, SyscallHandler)] = [
        // getxattr, lgetxattr, fgetxattr, listxattr, llistxattr, flistxattr: the rootfs
        // offers no extended attributes, as a filesystem without them answers.
        (191, { _, _ in .error(.EOPNOTSUPP) }), (192, { _, _ in .error(.EOPNOTSUPP) }), (193, { _, _ in .error(.EOPNOTSUPP) }),
        (194, { _, _ in .error(.EOPNOTSUPP) }), (195, { _, _ in .error(.EOPNOTSUPP) }), (196, { _, _ in .error(.EOPNOTSUPP) }),
        // fadvise64: advice only; a descriptor that is not open is still refused.
        (221, { vm, c in vm.files.hostDescriptor(of: c.int(c.a0)) == nil ? .error(.EBADF) : .success }),
        (0, { vm, c in vm.readIntoGuest(c.int(c.a0), c.a1, c.a2) }),
        (1, { vm, c in vm.raisingPipeSignal(vm.writeFromGuest(c.int(c.a0), c.a1, c.a2)) }),
        (2, { vm, c in vm.withPath(c.a0) { .int(vm.files.openat(dirfd: atCurrentDirectory, path: $0, flags: c.int(c.a1), mode: UInt32(truncatingIfNeeded: c.a2) & ~vm.umask)) } }),
        (3, { vm, c in .int(vm.files.close(c.int(c.a0))) }),
        (4, { vm, c in vm.stat(atCurrentDirectory, c.a0, c.a1, flags: 0) }),
        (5, { vm, c in vm.withBuffer(c.a1, 144, writable: true) { vm.files.fstat(c.int(c.a0), into: $0) } }),
        (6, { vm, c in vm.stat(atCurrentDirectory, c.a0, c.a1, flags: 0x100) }),
        (7, { vm, c in vm.poll(c.a0, c.a1, timeout: Int64(c.int(c.a2)) < 0 ? nil : Double(c.int(c.a2)) / 1000) }),
        (8, { vm, c in .int(vm.files.lseek(c.int(c.a0), offset: Int(Int64(bitPattern: c.a1)), whence: c.int(c.a2))) }),
        (16, { vm, c in vm.ioctl(c) }),
        (17, { vm, c in vm.transfer(c.a1, c.a2, writable: true) { vm.files.pread(c.int(c.a0), into: $0, offset: Int(Int64(bitPattern: c.a3)) &+ $1) } }),
        (18, { vm, c in vm.transfer(c.a1, c.a2, writable: false) { vm.files.pwrite(c.int(c.a0), from: UnsafeRawBufferPointer($0), offset: Int(Int64(bitPattern: c.a3)) &+ $1) } }),
        (19, { vm, c in vm.vectored(c, writing: false) }),
        (20, { vm, c in vm.raisingPipeSignal(vm.vectored(c, writing: true)) }),
        (21, { vm, c in vm.withPath(c.a0) { .int(vm.files.faccessat(dirfd: atCurrentDirectory, path: $0, mode: c.int(c.a1), flags: 0)) } }),
        (32, { vm, c in .int(vm.files.dup(c.int(c.a0))) }),
        (33, { vm, c in .int(vm.files.dup2(c.int(c.a0), c.int(c.a1))) }),
        (40, { vm, c in vm.sendfile(c) }),
        (72, { vm, c in .int(vm.files.fcntl(c.int(c.a0), command: c.int(c.a1), argument: Int(Int64(bitPattern: c.a2)))) }),
        (79, { vm, c in vm.withBuffer(c.a0, min(c.a1, pathMax), writable: true) { vm.files.getcwd(into: $0) } }),
        (80, { vm, c in vm.withPath(c.a0) { .int(vm.files.chdir($0)) } }),
        (81, { vm, c in .int(vm.files.fchdir(c.int(c.a0))) }),
        (89, { vm, c in vm.readlink(atCurrentDirectory, c.a0, c.a1, c.a2) }),
        (217, { vm, c in vm.withBuffer(c.a1, min(c.a2, UInt64(AddressSpace.bounceLimit)), writable: true) { vm.files.getdents64(c.int(c.a0), into: $0) } }),
        (257, { vm, c in vm.withPath(c.a1) { .int(vm.files.openat(dirfd: c.int(c.a0), path: $0, flags: c.int(c.a2), mode: UInt32(truncatingIfNeeded: c.a3) & ~vm.umask)) } }),
        (262, { vm, c in vm.stat(c.int(c.a0), c.a1, c.a2, flags: c.int(c.a3)) }),
        (267, { vm, c in vm.readlink(c.int(c.a0), c.a1, c.a2, c.a3) }),
        (269, { vm, c in vm.withPath(c.a1) { .int(vm.files.faccessat(dirfd: c.int(c.a0), path: $0, mode: c.int(c.a2), flags: 0)) } }),
        (271, { vm, c in vm.ppoll(c) }),
        (292, { vm, c in .int(vm.files.dup3(c.int(c.a0), c.int(c.a1), flags: c.int(c.a2))) }),
        (332, { vm, c in vm.statx(c) }),
        (439, { vm, c in vm.withPath(c.a1) { .int(vm.files.faccessat(dirfd: c.int(c.a0), path: $0, mode: c.int(c.a2), flags: c.int(c.a3))) } }),
    ]

    private func stat(_ dirfd: Int32, _ path: UInt64, _ buffer: UInt64, flags: Int32) -> SyscallOutcome {
        withPathAndBuffer(path, buffer, 144) { files.fstatat(dirfd: dirfd, path: $0, into: $1, flags: flags) }
    }

    private func statx(_ c: SystemCall) -> SyscallOutcome {
        withPathAndBuffer(c.a1, c.a4, 256) { files.statx(dirfd: c.int(c.a0), path: $0, flags: c.int(c.a2), mask: UInt32(truncatingIfNeeded: c.a3), into: $1) }
    }

    private func readlink(_ dirfd: Int32, _ path: UInt64, _ buffer: UInt64, _ size: UInt64) -> SyscallOutcome {
        guard Int64(bitPattern: size) > 0 else { return .error(.EINVAL) }
        return withPathAndBuffer(path, buffer, min(size, Self.pathMax)) { files.readlinkat(dirfd: dirfd, path: $0, into: $1) }
    }

    /// A path argument plus an output buffer, each checked.
    private func withPathAndBuffer(_ path: UInt64, _ buffer: UInt64, _ length: UInt64, _ body: (UnsafePointer<CChar>, UnsafeMutableRawBufferPointer) -> Int) -> SyscallOutcome {
        withPath(path) { cPath in withBuffer(buffer, length, writable: true) { body(cPath, $0) } }
    }

    /// ioctl: the argument's size depends on the request; unknown requests get no buffer.
    private func ioctl(_ c: SystemCall) -> SyscallOutcome {
        let request = UInt32(truncatingIfNeeded: c.a1)
        if let terminal = files.terminal(of: c.int(c.a0)) { return terminalIoctl(terminal, request: request, c) }
        guard let size = GuestFiles.ioctlArgumentSize(request: request) else {
            return .int(files.ioctl(c.int(c.a0), request: request, argument: UnsafeMutableRawBufferPointer(start: nil, count: 0)))
        }
        return withBuffer(c.a2, UInt64(size), writable: true) { files.ioctl(c.int(c.a0), request: request, argument: $0) }
    }

    /// readv and writev: each iovec checked, transferred in order, stopping at a short transfer.
    private func vectored(_ c: SystemCall, writing: Bool) -> SyscallOutcome {
        let count = Int64(bitPattern: c.a2)
        guard count >= 0, count <= 1024 else { return .error(.EINVAL) }
        guard let vectors = space.read(c.a1, count: Int(count) * 16) else { return .error(.EFAULT) }
        var total: Int64 = 0
        for index in 0..<Int(count) {
            // unsafe: count * 16 bytes read and index < count, so both words lie inside; loadUnaligned needs no alignment.
            let base = vectors.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: index * 16, as: UInt64.self) }
            let length = vectors.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: index * 16 + 8, as: UInt64.self) }
            guard length > 0 else { continue }
            // Only a read that has nothing yet waits, as one readv does.
            let outcome = writing ? writeFromGuest(c.int(c.a0), base, length) : readIntoGuest(c.int(c.a0), base, length, mayWait: total == 0)
            guard case .value(let done) = outcome else { return outcome }
            if done < 0 { return total > 0 ? .value(total) : .value(done) }
            total += done
            if UInt64(done) < length { break }
        }
        return .value(total)
    }

    /// poll over the guest's descriptors, answered by the host's poll on the files behind
    /// them and on the VM's interrupt eventfd, so that stop and kill end a wait at once.
    private func poll(_ address: UInt64, _ count: UInt64, timeout: Double?) -> SyscallOutcome {
        guard count <= UInt64(files.descriptorLimit) else { return .error(.EINVAL) }
        guard let entries = space.read(address, count: Int(count) * 8) else { return .error(.EFAULT) }
        let invalid: Int16 = 0x20 // POLLNVAL
        // The open files are held for the whole call: another thread closing a guest
        // descriptor meanwhile cannot make its host number another file's.
        var held: [OpenFile] = []
        // A terminal is ready without the host's say for output (its log always takes it)
        // and for input it has processed already; its host file is its input.
        var terminalReady = [Int16](repeating: 0, count: Int(count))
        let readable = Int16(POLLIN) | 0x40, writable = Int16(POLLOUT) | 0x100 // POLLRDNORM, POLLWRNORM
        var host = (0..<Int(count)).map { index -> pollfd in
            // unsafe: count * 8 bytes read and index < count: fd at index * 8 and events at + 4 lie inside; loadUnaligned needs no alignment.
            let fd = entries.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: index * 8, as: Int32.self) }
            let events = entries.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: index * 8 + 4, as: Int16.self) }
            guard fd >= 0 else { return pollfd(fd: -1, events: events, revents: 0) }
            guard let file = try? files.openFile(fd) else { return pollfd(fd: -2, events: events, revents: 0) }
            held.append(file)
            if let terminal = file.terminal {
                terminalReady[index] = events & writable | (terminal.hasReadyInput ? events & readable : 0)
                return pollfd(fd: file.hostFD, events: events & ~writable, revents: 0)
            }
            return pollfd(fd: file.hostFD, events: events, revents: 0)
        }
        let readyAlready = terminalReady.contains { $0 != 0 }
        defer { withExtendedLifetime(held) {} }
        let deadline = timeout.map { Date(timeIntervalSinceNow: $0) }
        let wake = interrupts.wakeup.waitDescriptor()
        var ready: Int32 = 0
        while true {
            var checked = host.map { $0.fd == -2 ? pollfd(fd: -1, events: 0, revents: 0) : $0 }
            checked.append(pollfd(fd: wake ?? -1, events: Int16(POLLIN), revents: 0))
            let slice = readyAlready ? 0 : Self.pollSlice(until: deadline, woken: wake != nil)
            // The process's other threads serve their calls meanwhile.
            ready = releasingMachineState { Glibc.poll(&checked, nfds_t(checked.count), slice) }
            if ready < 0 && errno != EINTR { return .error(.EINVAL) }
            if let wake, checked[host.count].revents != 0 { interrupts.wakeup.drain(wake) }
            for index in host.indices {
                host[index].revents = host[index].fd == -2 ? invalid : checked[index].revents | terminalReady[index]
            }
            ready = Int32(host.filter { $0.revents != 0 }.count)
            if ready > 0 || (deadline.map { $0.timeIntervalSinceNow <= 0 } ?? false) { break }
            if interrupts.hasPending { return .error(.EINTR) }
        }
        var result = entries
        for index in host.indices {
            // unsafe: revents is an Int16: its 2 bytes go to index * 8 + 6 inside `result` (replaceSubrange checks the range).
            withUnsafeBytes(of: host[index].revents) { result.replaceSubrange((index * 8 + 6)..<(index * 8 + 8), with: $0) }
        }
        return space.write(address, result) ? .int(Int(ready)) : .error(.EFAULT)
    }

    /// Milliseconds one host poll may last: what is left of the guest's timeout, whatever
    /// its length (at most an hour a time, inside Int32), or for ever without one; 50 ms
    /// slices, between which requests are checked, when there is no interrupt eventfd.
    private static func pollSlice(until deadline: Date?, woken: Bool) -> Int32 {
        let longest: Double = woken ? 3_600_000 : 50
        guard let deadline else { return woken ? -1 : Int32(longest) }
        return Int32(max(0, min(longest, (deadline.timeIntervalSinceNow * 1000).rounded(.up))))
    }

    private func ppoll(_ c: SystemCall) -> SyscallOutcome {
        guard c.a2 != 0 else { return poll(c.a0, c.a1, timeout: nil) }
        guard let timeout = space.read(c.a2, count: 16) else { return .error(.EFAULT) }
        // unsafe: 16 bytes read, loads at 0 and 8, unaligned loads (no alignment assumed).
        let (seconds, nanoseconds) = timeout.withUnsafeBytes { ($0.loadUnaligned(as: Int64.self), $0.loadUnaligned(fromByteOffset: 8, as: Int64.self)) }
        guard seconds >= 0, (0..<1_000_000_000).contains(nanoseconds) else { return .error(.EINVAL) }
        return poll(c.a0, c.a1, timeout: Double(seconds) + Double(nanoseconds) / 1e9)
    }

    /// sendfile, as a read and a write through the engine in 64 KiB steps. Only the first
    /// read waits for data; each write waits until the step is written.
    private func sendfile(_ c: SystemCall) -> SyscallOutcome {
        let output = c.int(c.a0), input = c.int(c.a1)
        var offset: Int64?
        if c.a2 != 0 {
            guard let value = space.readValue(c.a2, as: Int64.self) else { return .error(.EFAULT) }
            guard value >= 0 else { return .error(.EINVAL) }
            offset = value
        }
        var remaining = min(c.a3, 0x7FFF_F000)
        var total = 0
        var chunk = [UInt8](repeating: 0, count: 65536)
        while remaining > 0 {
            let wanted = Int(min(remaining, UInt64(chunk.count)))
            // unsafe: wanted <= chunk.count, so the slice lies in the array; the reads write only into it, while the closure runs.
            let got = chunk.withUnsafeMutableBytes { buffer in
                let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[..<wanted])
                if let offset { return files.pread(input, into: slice, offset: Int(offset)) }
                return total == 0 ? waitingTransfer(input, events: Int16(POLLIN)) { files.read(input, into: slice) } : files.read(input, into: slice)
            }
            if got < 0 { return total > 0 ? .int(total) : .int(got) }
            if got == 0 { break }
            // unsafe: got <= wanted <= chunk.count (the read filled at most the slice), and writeFully reads it only during the closure.
            let put = chunk.withUnsafeBytes { writeFully(output, UnsafeRawBufferPointer(rebasing: $0[..<got])) }
            if put < 0 { return total > 0 ? .int(total) : .int(put) }
            total += put
            offset? += Int64(put)
            remaining -= UInt64(put)
            if put < got { break }
        }
        // unsafe: the Int64 offset's eight bytes are copied into an array before the closure returns.
        if let offset, !space.write(c.a2, withUnsafeBytes(of: offset) { Array($0) }) { return .error(.EFAULT) }
        return .int(total)
    }

    /// Runs `body` on a host descriptor of `path`, the executable to load, opened in the
    /// rootfs and confined like any guest open. Host errors reading it say which file.
    static func withExecutable<T>(_ path: String, from files: GuestFiles, _ body: (Int32) throws(GuestError) -> T) throws(GuestError) -> T {
        let fd = path.withCString { files.openat(dirfd: atCurrentDirectory, path: $0, flags: 0o2000000, mode: 0, chargedToBudget: false) }
        guard fd >= 0 else { throw .invalidExecutable("\(path) in the rootfs: \(String(cString: strerror(Int32(-fd))))") }
        defer { _ = files.close(Int32(fd)) }
        do {
            return try body(files.hostDescriptor(of: Int32(fd))!)
        } catch .system(let error) {
            throw .invalidExecutable("\(path) in the rootfs: \(error)")
        }
    }
}

