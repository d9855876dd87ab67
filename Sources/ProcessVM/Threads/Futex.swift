import Foundation
import Glibc

/// The threads waiting on futexes of one process, in the order they came, by guest virtual
/// address (a process's threads share one address space, and a futex of another process
/// cannot be reached from here: each process is a VM of its own). Used only under the
/// process's `machineState`, so a wait's check of the word and its queueing are one step
/// against every wake, as under Linux's hash-bucket lock.
struct FutexTable {
    static let anyBitset: UInt32 = 0xFFFF_FFFF
    private var queues: [UInt64: [(thread: GuestThread, bitset: UInt32)]] = [:]

    mutating func enqueue(_ thread: GuestThread, at address: UInt64, bitset: UInt32) {
        queues[address, default: []].append((thread, bitset))
        thread.futexKey = address
    }

    mutating func remove(_ thread: GuestThread, from address: UInt64) {
        queues[address]?.removeAll { $0.thread === thread }
        if queues[address]?.isEmpty == true { queues[address] = nil }
        thread.futexKey = nil
    }

    /// Wakes up to `count` waiters at `address` whose bitset meets `bitset`; how many.
    mutating func wake(_ address: UInt64, count: Int, bitset: UInt32) -> Int {
        guard var queue = queues[address] else { return 0 }
        var woken = 0
        queue.removeAll { waiter in
            guard woken < count, waiter.bitset & bitset != 0 else { return false }
            woken += 1
            waiter.thread.futexKey = nil
            waiter.thread.interrupts.wakeFutex()
            return true
        }
        queues[address] = queue.isEmpty ? nil : queue
        return woken
    }

    /// Wakes up to `wakeCount` waiters at `address`, then moves up to `moveCount` of the rest
    /// to `target`; how many were woken and moved.
    mutating func requeue(_ address: UInt64, to target: UInt64, wakeCount: Int, moveCount: Int) -> Int {
        let woken = wake(address, count: wakeCount, bitset: Self.anyBitset)
        guard address != target, let queue = queues[address] else { return woken }
        let moving = queue.prefix(moveCount)
        queues[address] = queue.count > moving.count ? Array(queue.dropFirst(moving.count)) : nil
        for waiter in moving { waiter.thread.futexKey = target }
        queues[target, default: []].append(contentsOf: moving)
        return woken + moving.count
    }
}

/// futex(2): wait, wake, requeue and their bitset forms, private or not (the same here), with
/// CLOCK_REALTIME for absolute timeouts. A wait lets the process's other threads serve their
/// calls meanwhile, and a kill or an unblocked signal ends it with EINTR.
extension ProcessVM {
    enum FutexOperation {
        static let wait: Int32 = 0, wake: Int32 = 1, requeue: Int32 = 3, compareRequeue: Int32 = 4
        static let waitBitset: Int32 = 9, wakeBitset: Int32 = 10
        static let privateFlag: Int32 = 128, clockRealtime: Int32 = 256
    }

    static let futexSyscalls: [(Int, SyscallHandler)] = [
        (202, { vm, c in vm.futex(c) }),
    ]

    private func futex(_ c: SystemCall) -> SyscallOutcome {
        let operation = c.int(c.a1) & ~(FutexOperation.privateFlag | FutexOperation.clockRealtime)
        let realtime = c.int(c.a1) & FutexOperation.clockRealtime != 0
        let address = c.a0
        guard address % 4 == 0 else { return .error(.EINVAL) }
        guard AddressSpace.isUserRange(address, 4) else { return .error(.EFAULT) }
        switch operation {
        case FutexOperation.wait, FutexOperation.waitBitset:
            let bitset = operation == FutexOperation.wait ? FutexTable.anyBitset : UInt32(truncatingIfNeeded: c.a5)
            guard bitset != 0 else { return .error(.EINVAL) }
            guard !realtime || operation == FutexOperation.waitBitset else { return .error(.ENOSYS) }
            return futexWait(address, expected: UInt32(truncatingIfNeeded: c.a2), timeout: c.a3,
                             absolute: operation == FutexOperation.waitBitset, realtime: realtime, bitset: bitset)
        case FutexOperation.wake, FutexOperation.wakeBitset:
            // A shared futex's key is its page, which must be there (a private one's is
            // only its address, as on Linux).
            if c.int(c.a1) & FutexOperation.privateFlag == 0, space.readValue(address, as: UInt32.self) == nil { return .error(.EFAULT) }
            let bitset = operation == FutexOperation.wake ? FutexTable.anyBitset : UInt32(truncatingIfNeeded: c.a5)
            guard bitset != 0 else { return .error(.EINVAL) }
            // Linux wakes at least one waiter whatever the count.
            return .int(threads.futexes.wake(address, count: max(Int(c.int(c.a2)), 1), bitset: bitset))
        case FutexOperation.requeue, FutexOperation.compareRequeue:
            let target = c.a4
            let wakeCount = Int(c.int(c.a2)), moveCount = Int(c.int(c.a3))
            guard wakeCount >= 0, moveCount >= 0 else { return .error(.EINVAL) }
            guard target % 4 == 0 else { return .error(.EINVAL) }
            guard AddressSpace.isUserRange(target, 4) else { return .error(.EFAULT) }
            if operation == FutexOperation.compareRequeue {
                guard let value = space.readValue(address, as: UInt32.self) else { return .error(.EFAULT) }
                if value != UInt32(truncatingIfNeeded: c.a5) { return .error(.EAGAIN) }
            }
            return .int(threads.futexes.requeue(address, to: target, wakeCount: wakeCount, moveCount: moveCount))
        default:
            recordMissing(202)
            return .error(.ENOSYS)
        }
    }

    private func futexWait(_ address: UInt64, expected: UInt32, timeout: UInt64, absolute: Bool, realtime: Bool, bitset: UInt32) -> SyscallOutcome {
        // The timeout is read once, before the word, as Linux does.
        var seconds: Double?
        if timeout != 0 {
            guard let bytes = space.read(timeout, count: 16) else { return .error(.EFAULT) }
            // unsafe: 16 bytes read, loads at 0 and 8, unaligned loads (no alignment assumed).
            let (whole, nanoseconds) = bytes.withUnsafeBytes { ($0.loadUnaligned(as: Int64.self), $0.loadUnaligned(fromByteOffset: 8, as: Int64.self)) }
            guard whole >= 0, (0..<1_000_000_000).contains(nanoseconds) else { return .error(.EINVAL) }
            var left = Double(whole) + Double(nanoseconds) / 1e9
            if absolute {
                var now = timespec()
                clock_gettime(realtime ? CLOCK_REALTIME : CLOCK_MONOTONIC, &now)
                left -= Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
            }
            seconds = left
        }
        guard let value = space.readValue(address, as: UInt32.self) else { return .error(.EFAULT) }
        guard value == expected else { return .error(.EAGAIN) }
        if let seconds, seconds <= 0 { return .error(.ETIMEDOUT) }
        let thread = current
        thread.interrupts.clearFutexWake()
        threads.futexes.enqueue(thread, at: address, bitset: bitset)
        let interrupted = releasingMachineState { thread.interrupts.waitForFutexWake(seconds: seconds) }
        // Woken when a wake took it off its queue; otherwise it is still queued (perhaps
        // moved by a requeue) and leaves.
        guard let key = thread.futexKey else { return .success }
        threads.futexes.remove(thread, from: key)
        return .error(interrupted ? .EINTR : .ETIMEDOUT)
    }
}
