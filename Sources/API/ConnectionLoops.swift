import Dispatch
import NIOCore
import NIOPosix
import Synchronization

/// The event loops of the agent's Unix-socket connections: each connection gets a loop of its
/// own, up to `capacity` at once, so that its thread may run a container to its end (`POST
/// /v1/containers/run`) without holding up anyone else's requests. Beyond that many, a
/// connection shares the `shared` loops, as every connection did before, and its runs go to a
/// container thread.
///
/// Why: on this kind of machine a wake-up across cores is the dear part of a request (a pipe
/// ping-pong costs ~60 µs p50 across cores against ~3 µs on one; a woken vCPU that had halted is
/// an exit of the nested hypervisor). A run through a shared loop crossed threads four times
/// (the client to the loop, the loop to the container's thread, back to the loop, back to the
/// client); on its own loop it crosses twice.
///
/// Loops are made when first needed (a thread each) and kept until `shutdown`; the loop of a
/// connection that closed goes to the next connection. (NIO's server bootstrap takes the
/// child's loop round robin from a fixed group, so `AgentHTTPServer` accepts these
/// connections itself and hands each socket to the loop `take` gives.)
final class ConnectionLoops: Sendable {
    /// Connections with a loop of their own at most.
    let capacity: Int
    /// Where connections beyond `capacity` go.
    let shared: any EventLoopGroup
    private struct State {
        var groups: [MultiThreadedEventLoopGroup] = []
        /// Loops no connection holds now.
        var free: [any EventLoop] = []
        var shutDown = false
    }
    private let state = Mutex(State())

    init(capacity: Int, shared: any EventLoopGroup) {
        self.capacity = capacity
        self.shared = shared
    }

    /// A loop for the next connection: one of its own (`owned`), or a shared one when
    /// `capacity` are held (or the loops are shut down).
    func take() -> (loop: any EventLoop, owned: Bool) {
        let own = state.withLock { state -> (any EventLoop)? in
            guard !state.shutDown else { return nil }
            if let loop = state.free.popLast() { return loop }
            guard state.groups.count < capacity else { return nil }
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            state.groups.append(group)
            return group.next()
        }
        if let own { return (own, true) }
        return (shared.next(), false)
    }

    /// The connection on `loop` (which `take` gave as owned) closed: the loop is free.
    func give(_ loop: any EventLoop) {
        state.withLock { state in
            guard !state.shutDown else { return }
            state.free.append(loop)
        }
    }

    /// Loops made so far (each a thread).
    var made: Int { state.withLock { $0.groups.count } }

    /// Shuts the loops down, once their connections have closed (the server's shutdown).
    func shutdown() async {
        let groups = state.withLock { state in
            state.shutDown = true
            state.free = []
            return state.groups
        }
        for group in groups { try? await group.shutdownGracefully() }
    }
}
