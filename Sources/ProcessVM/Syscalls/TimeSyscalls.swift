import Glibc

/// Clocks and sleeps. Clocks read the host's (so a fork child's clock is right without any
/// adjustment); sleeps wait on the VM's kill signal so stop and kill interrupt them.
extension ProcessVM {
    static let timeSyscalls: [(Int, SyscallHandler)] = [
        (35, { vm, c in vm.sleep(clock: CLOCK_MONOTONIC, flags: 0, request: c.a0, remaining: c.a1) }),
        (96, { vm, c in vm.gettimeofday(c) }),
        (201, { vm, c in vm.time(c.a0) }),
        (228, { vm, c in vm.clockGet(c, resolution: false) }),
        (229, { vm, c in vm.clockGet(c, resolution: true) }),
        (230, { vm, c in vm.sleep(clock: c.int(c.a0), flags: c.int(c.a1), request: c.a2, remaining: c.a3) }),
    ]

    private static let supportedClocks: ClosedRange<Int32> = 0...7

    private func timespecBytes(_ value: timespec) -> [UInt8] {
        // unsafe: two Int64s are 16 contiguous bytes (struct timespec), copied into an array in the closure.
        withUnsafeBytes(of: (Int64(value.tv_sec), Int64(value.tv_nsec))) { Array($0) }
    }

    private func clockGet(_ c: SystemCall, resolution: Bool) -> SyscallOutcome {
        let clock = c.int(c.a0)
        guard Self.supportedClocks.contains(clock) else { return .error(.EINVAL) }
        var value = timespec()
        if resolution { clock_getres(clockid_t(clock), &value) } else { clock_gettime(clockid_t(clock), &value) }
        if c.a1 == 0 { return .success }
        return space.write(c.a1, timespecBytes(value)) ? .success : .error(.EFAULT)
    }

    private func gettimeofday(_ c: SystemCall) -> SyscallOutcome {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        // unsafe: two Int64s are 16 contiguous bytes (struct timeval), copied into an array in the closure.
        if c.a0 != 0, !space.write(c.a0, withUnsafeBytes(of: (Int64(now.tv_sec), Int64(now.tv_nsec / 1000))) { Array($0) }) {
            return .error(.EFAULT)
        }
        if c.a1 != 0, !space.write(c.a1, [UInt8](repeating: 0, count: 8)) { return .error(.EFAULT) }
        return .success
    }

    private func time(_ address: UInt64) -> SyscallOutcome {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        // unsafe: the Int64's eight bytes (a time_t) are copied into an array before the closure returns.
        if address != 0, !space.write(address, withUnsafeBytes(of: Int64(now.tv_sec)) { Array($0) }) { return .error(.EFAULT) }
        return .value(Int64(now.tv_sec))
    }

    private func sleep(clock: Int32, flags: Int32, request: UInt64, remaining: UInt64) -> SyscallOutcome {
        let absolute: Int32 = 1
        guard Self.supportedClocks.contains(clock) else { return .error(.EINVAL) }
        guard let bytes = space.read(request, count: 16) else { return .error(.EFAULT) }
        // unsafe: 16 bytes read, loads at 0 and 8, unaligned loads (no alignment assumed).
        let (seconds, nanoseconds) = bytes.withUnsafeBytes { ($0.loadUnaligned(as: Int64.self), $0.loadUnaligned(fromByteOffset: 8, as: Int64.self)) }
        guard seconds >= 0, (0..<1_000_000_000).contains(nanoseconds) else { return .error(.EINVAL) }
        var duration = Double(seconds) + Double(nanoseconds) / 1e9
        if flags & absolute != 0 {
            var now = timespec()
            clock_gettime(clockid_t(clock), &now)
            duration -= Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
        }
        let waits = interrupts
        if duration > 0, releasingMachineState({ waits.wait(seconds: duration) }) {
            // Interrupted by a signal or a kill: the run loop acts on it before the program resumes.
            return .error(.EINTR)
        }
        return .success
    }
}
