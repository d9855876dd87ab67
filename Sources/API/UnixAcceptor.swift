import CShims
import Foundation
import Synchronization

/// A listening Unix stream socket whose connections are accepted on a thread of its own and
/// handed on as descriptors (`AgentHTTPServer` gives each to an event loop of `ConnectionLoops`).
///
/// At most `acceptedAtOnce` connections are held at once: beyond, the thread stops accepting
/// until one closes (`connectionClosed`), and new callers wait in the kernel's backlog, as
/// NIO's `AvailableConnectionsChannelHandler` does on the TCP listener.
final class UnixAcceptor: @unchecked Sendable {
    // @unchecked: `listener` and `wake` are set in `init` and only read after; `held` and
    // `stopping` are under `condition`.
    private let listener: Int32
    /// A pipe whose write end `stop` writes: wakes the thread out of its poll.
    private let wake: (read: Int32, write: Int32)
    private let acceptedAtOnce: Int
    private let condition = NSCondition()
    private var held = 0
    private var stopping = false
    private let finished = Mutex<CheckedContinuation<Void, Never>?>(nil)
    private let done = Atomic<Bool>(false)

    /// Binds and listens at `path` (which must not exist), mode as the umask leaves it.
    init(path: String, backlog: Int32, acceptedAtOnce: Int) throws {
        self.acceptedAtOnce = max(1, acceptedAtOnce)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Self.failure("socket") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(fd)
            throw APIError(status: .internalServerError, code: "failed", message: "the socket path \(path) is longer than a Unix socket's address holds (107 bytes)")
        }
        // unsafe: the path's bytes (checked shorter than sun_path above) are copied into the
        // tuple's own storage, which the pointer covers for the call.
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        // unsafe: the address is a sockaddr_un, passed with its own size.
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(fd, backlog) == 0 else {
            let error = Self.failure("bind \(path)")
            close(fd)
            throw error
        }
        var ends: [Int32] = [-1, -1]
        guard cshims_pipe_nonblocking(&ends) == 0 else {
            let error = Self.failure("pipe")
            close(fd)
            throw error
        }
        listener = fd
        wake = (ends[0], ends[1])
    }

    deinit {
        close(listener)
        close(wake.read)
        close(wake.write)
    }

    private static func failure(_ what: String) -> APIError {
        APIError(status: .internalServerError, code: "failed", message: "\(what): \(String(cString: strerror(errno)))")
    }

    /// Accepts on a thread of its own until `stop`, handing each connection's descriptor
    /// (non-blocking, close-on-exec) to `handle`, which owns it from then on.
    func start(_ handle: @escaping @Sendable (Int32) -> Void) {
        let thread = Thread { [self] in
            acceptLoop(handle)
            done.store(true, ordering: .releasing)
            finished.withLock { $0.take() }?.resume()
        }
        thread.stackSize = 1 << 18
        thread.start()
    }

    private func acceptLoop(_ handle: @Sendable (Int32) -> Void) {
        var fds = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0), pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0)]
        while true {
            condition.lock()
            while held >= acceptedAtOnce && !stopping { condition.wait() }
            let stop = stopping
            condition.unlock()
            if stop { return }
            fds[0].revents = 0
            fds[1].revents = 0
            let ready = poll(&fds, 2, -1)
            if ready < 0 && errno != EINTR { return }
            if fds[1].revents != 0 { return }
            guard fds[0].revents != 0 else { continue }
            let fd = cshims_accept_nonblocking(listener)
            if fd < 0 {
                switch errno {
                case EAGAIN, EINTR, ECONNABORTED, EPROTO: continue
                // Out of descriptors: the caller waits in the backlog until some close.
                case EMFILE, ENFILE, ENOBUFS, ENOMEM: usleep(10_000); continue
                default: return
                }
            }
            condition.lock()
            held += 1
            condition.unlock()
            handle(fd)
        }
    }

    private func markStopping() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }

    /// A connection handed out again (one a worker held and gave back).
    func connectionReopened() {
        condition.lock()
        held += 1
        condition.unlock()
    }

    /// A connection handed out closed.
    func connectionClosed() {
        condition.lock()
        held -= 1
        condition.signal()
        condition.unlock()
    }

    /// Stops accepting; returns once the thread has ended (connections already handed out stay).
    func stop() async {
        markStopping()
        var byte: UInt8 = 1
        _ = write(wake.write, &byte, 1)
        await withCheckedContinuation { continuation in
            finished.withLock { waiting in
                if done.load(ordering: .acquiring) { continuation.resume() } else { waiting = continuation }
            }
        }
    }
}
