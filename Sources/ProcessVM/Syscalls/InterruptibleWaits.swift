import CShims
import Foundation
import HostSystem

/// An eventfd that kill and stop write to, so that a vCPU thread waiting in poll(2) for a
/// guest's file wakes at once. Host calls never block otherwise (see `HostAccess`): the kick
/// signal alone could be lost between a check and the call, and `retryingSyscall` retries
/// EINTR. Made on the first wait, so VMs that never wait pay nothing for it.
///
/// `@unchecked Sendable`: `descriptor` is read and set only under `lock`.
final class InterruptWakeup: @unchecked Sendable {
    private let lock = NSLock()
    private var descriptor: Int32 = -1

    /// Wakes a wait in progress, if a wait ever began.
    func notify() {
        lock.withLock {
            guard descriptor >= 0 else { return }
            var one: UInt64 = 1
            _ = write(descriptor, &one, MemoryLayout<UInt64>.size)
        }
    }

    /// The eventfd, made now if need be; nil when the host refuses one.
    func waitDescriptor() -> Int32? {
        lock.withLock {
            if descriptor < 0 { descriptor = cshims_eventfd_nonblocking() }
            return descriptor >= 0 ? descriptor : nil
        }
    }

    /// Empties the counter after a wake-up.
    func drain(_ fd: Int32) {
        var count: UInt64 = 0
        _ = read(fd, &count, MemoryLayout<UInt64>.size)
    }

    deinit {
        if descriptor >= 0 { close(descriptor) }
    }
}

extension Interrupts {
    /// How long one poll lasts when no eventfd could be made (the wait then checks for
    /// requests between slices).
    private static let fallbackSlice: Int32 = 50

    /// Waits until host descriptor `fd` is ready for `events` (or at its end, or in error:
    /// the transfer then says which); false when a kill or a signal came first.
    /// With `milliseconds` >= 0 it returns true after that long too (the caller checks its
    /// own deadline).
    func waitUntilReady(_ fd: Int32, events: Int16, milliseconds: Int32 = -1) -> Bool {
        let wake = wakeup.waitDescriptor()
        while true {
            // A request made before the eventfd existed is seen here; one made after it
            // writes to it, so none is lost between this check and the poll.
            if hasPending { return false }
            var entries = [pollfd(fd: fd, events: events, revents: 0), pollfd(fd: wake ?? -1, events: Int16(POLLIN), revents: 0)]
            let slice = wake == nil ? (milliseconds < 0 ? Self.fallbackSlice : min(milliseconds, Self.fallbackSlice)) : milliseconds
            let ready = poll(&entries, nfds_t(entries.count), slice)
            if ready < 0, cshims_errno() != EINTR { return !hasPending }
            if entries[0].revents != 0 || ready == 0 && milliseconds >= 0 { return !hasPending }
            if let wake, entries[1].revents != 0 { wakeup.drain(wake) }
        }
    }
}

extension ProcessVM {
    /// Runs `attempt` (a transfer through guest descriptor `fd` that never blocks); while it
    /// answers EAGAIN and the guest wants to wait, waits for the file to be ready for `events`
    /// or for a kill or signal, which ends the wait with EINTR (the run loop then acts on it).
    func waitingTransfer(_ fd: Int32, events: Int16, _ attempt: () -> Int) -> Int {
        while true {
            let result = attempt()
            guard result == -Int(EAGAIN), files.guestWaits(fd), let host = files.hostDescriptor(of: fd) else { return result }
            guard interrupts.waitUntilReady(host, events: events) else { return -Int(EINTR) }
        }
    }

    /// Writes all of `buffer` when the guest waits (a blocking write on Linux returns short
    /// only when a signal interrupts it); one attempt when it does not.
    func writeFully(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) -> Int {
        var done = 0
        repeat {
            // A slice of the caller's buffer, valid for this call (done <= count).
            let remaining = UnsafeRawBufferPointer(rebasing: buffer[done...])
            let written = waitingTransfer(fd, events: Int16(POLLOUT)) { files.write(fd, from: remaining) }
            if written < 0 { return done > 0 ? done : written }
            done += written
            if written == 0 || !files.guestWaits(fd) { break }
        } while done < buffer.count
        return done
    }
}
