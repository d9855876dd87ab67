import CShims
import Foundation
import KVM

/// Bounds how long buffered output (`OutputBuffer`) waits when the program makes no call: a
/// thread looks at each running VM's buffer every `interval`, and kicks the vCPU of one whose
/// buffer held output at two looks in a row, so that its run loop writes it out
/// (`ProcessVM.runUntilStop`, on `.interrupted`). Output so reaches its file within about two
/// intervals even while the program computes (a shell loop counting between two `echo`s makes
/// no call), at the price of an exit per interval for a program that keeps writing without
/// other calls.
///
/// One per KVM system (`of(_:)`), as the system-call poller. Its thread starts with the first
/// VM it watches and ends after `idleEnd` without one (or when the system ends), so an idle
/// engine has no thread waking for it, and a VM that starts while the thread runs costs a
/// lock and no wake-up.
final class OutputFlusher: KVMSystemCompanion, @unchecked Sendable {
    // @unchecked: `watched` (and its entries), `threadRunning`, `stopped` and `kicks` are only touched under `condition`.
    static func of(_ system: KVMSystem) -> OutputFlusher {
        system.companion(OutputFlusher.self) { OutputFlusher() }
    }

    static let interval: Duration = .milliseconds(50)
    private static let intervalSeconds = 0.05
    static let idleEnd: Duration = .seconds(2)

    /// A class, so that a look updates an entry without writing the dictionary it iterates
    /// (which would copy it, a thousand entries beside a thousand idle containers).
    private final class Watched {
        /// Unretained: a VM is watched only inside its `runUntilStop`, which ends the watch.
        unowned(unsafe) let vm: ProcessVM
        /// The buffer's `used` word in the VM's mailbox page (mapped while the VM runs).
        let used: UnsafeMutablePointer<UInt32>
        var heldOutputAtLastLook = false

        init(vm: ProcessVM, used: UnsafeMutablePointer<UInt32>) {
            self.vm = vm
            self.used = used
        }
    }

    private let condition = NSCondition()
    private var watched: [ObjectIdentifier: Watched] = [:]
    private var threadRunning = false
    private var stopped = false
    /// Kicks made, for tests.
    private(set) var kicks = 0

    func watch(_ vm: ProcessVM, used: UnsafeMutablePointer<UInt32>) {
        condition.withLock {
            watched[ObjectIdentifier(vm)] = Watched(vm: vm, used: used)
            guard !threadRunning, !stopped else { return }
            threadRunning = true
            let thread = Thread { [self] in loop() }
            thread.name = "vmfork-flusher"
            thread.stackSize = 256 << 10
            thread.start()
        }
    }

    func unwatch(_ vm: ProcessVM) {
        condition.withLock { _ = watched.removeValue(forKey: ObjectIdentifier(vm)) }
    }

    func systemEnded() {
        condition.withLock {
            stopped = true
            condition.broadcast()
        }
    }

    var kickCount: Int { condition.withLock { kicks } }

    private func loop() {
        var idleSince = ContinuousClock.now
        condition.lock()
        defer { condition.unlock() }
        while !stopped {
            _ = condition.wait(until: Date(timeIntervalSinceNow: Self.intervalSeconds))
            if stopped { break }
            if watched.isEmpty {
                if ContinuousClock.now - idleSince >= Self.idleEnd { break }
                continue
            }
            idleSince = ContinuousClock.now
            for entry in watched.values {
                // A racy look at a word the guest writes: only a hint, the vCPU thread reads it for real.
                let holds = cshims_atomic_load_u32(entry.used) != 0
                if holds && entry.heldOutputAtLastLook {
                    // Under the lock: the VM is still inside its run, its vCPU thread recorded.
                    entry.vm.kickToWriteOutOutput()
                    kicks += 1
                }
                entry.heldOutputAtLastLook = holds
            }
        }
        threadRunning = false
    }
}

extension ProcessVM {
    /// Makes the vCPU leave KVM_RUN so that its run loop writes out the buffered output.
    func kickToWriteOutOutput() {
        mainThread.vcpu.requestImmediateExit()
        mainThread.slot.kick()
    }
}
