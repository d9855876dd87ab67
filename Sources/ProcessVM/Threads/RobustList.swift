import CShims
import Foundation

/// Robust futexes at a thread's death, as Linux's exit_robust_list: a thread that exits
/// holding a robust mutex (pthread_mutexattr_setrobust) has the mutex's word marked
/// FUTEX_OWNER_DIED and one waiter woken, so the next locker gets EOWNERDEAD instead of
/// waiting forever. The list is the guest's (set_robust_list): every pointer in it is
/// checked, each word read once, and a list that loops or runs on is cut at Linux's limit.
extension ProcessVM {
    enum RobustFutex {
        static let waiters: UInt32 = 0x8000_0000
        static let ownerDied: UInt32 = 0x4000_0000
        static let tidMask: UInt32 = 0x3FFF_FFFF
        /// ROBUST_LIST_LIMIT: entries walked at most.
        static let listLimit = 2048
        /// struct robust_list_head: list.next, futex_offset, list_op_pending.
        static let nextOffset = 0, futexOffsetOffset = 8, pendingOffset = 16
        /// Bit 0 of an entry pointer marks a PI futex.
        static let piBit: UInt64 = 1
    }

    /// Walks `thread`'s robust list (it is exiting: called under the machine state).
    func releaseRobustFutexes(of thread: GuestThread) {
        let (head, length) = thread.robustList
        guard head != 0, length == Self.robustListHeadSize,
              let bytes = space.read(head, count: Int(Self.robustListHeadSize)) else { return }
        // unsafe: `bytes` is the 24-byte head (space.read's count) and each offset + 8 <= 24; loadUnaligned needs no alignment.
        func word(_ offset: Int) -> UInt64 { bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self) } }
        let futexOffset = word(RobustFutex.futexOffsetOffset)
        let pending = word(RobustFutex.pendingOffset)
        var entry = word(RobustFutex.nextOffset)
        var left = RobustFutex.listLimit
        while entry & ~RobustFutex.piBit != head {
            let address = entry & ~RobustFutex.piBit
            // The next pointer is read before this entry's futex is released (the releasing
            // thread may unlink it): as Linux, a bad one ends the walk after this entry.
            let next = space.readValue(address, as: UInt64.self)
            if address != pending & ~RobustFutex.piBit {
                ownerDied(address &+ futexOffset, tid: thread.tid, pi: entry & RobustFutex.piBit != 0, pending: false)
            }
            guard let next else { return }
            entry = next
            left -= 1
            if left == 0 { break }
        }
        if pending & ~RobustFutex.piBit != 0 {
            ownerDied((pending & ~RobustFutex.piBit) &+ futexOffset, tid: thread.tid, pi: pending & RobustFutex.piBit != 0, pending: true)
        }
    }

    /// handle_futex_death: a futex word owned by `tid` gets the owner-died bit (its waiters
    /// bit kept) and, when it had waiters, one is woken. A pending lock that never took the
    /// word (0) wakes one waiter, so a lock it was handed is not lost.
    private func ownerDied(_ address: UInt64, tid: Int32, pi: Bool, pending: Bool) {
        guard address % 4 == 0, AddressSpace.isUserRange(address, 4) else { return }
        enum Step { case done, wake, retry }
        for _ in 0..<64 {
            // A 4-byte aligned word lies in one page: the buffer is the guest's own memory,
            // so the compare-and-swap is atomic against the process's running threads.
            let step: Step? = space.withUserBuffer(address, 4, writable: true) { buffer in
                // unsafe: the 4 bytes are the guest's word itself (one page), 4-aligned (address % 4 == 0), used only inside the closure.
                let word = buffer.baseAddress!.assumingMemoryBound(to: UInt32.self)
                let value = cshims_atomic_load_u32(word)
                if pending, !pi, value == 0 { return .wake }
                guard value & RobustFutex.tidMask == UInt32(bitPattern: tid) else { return .done }
                guard cshims_atomic_cas_u32(word, value, (value & RobustFutex.waiters) | RobustFutex.ownerDied) != 0 else { return .retry }
                return !pi && value & RobustFutex.waiters != 0 ? .wake : .done
            }
            switch step {
            case nil, .done?: return
            case .retry?: continue
            case .wake?:
                _ = threads.futexes.wake(address, count: 1, bitset: FutexTable.anyBitset)
                return
            }
        }
    }
}
