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
/// Loops are made ahead, off the accept path (`spare` at start, then on a queue of their own as
/// connections take them, up to `capacity`), and kept until `shutdown`; the loop of a
/// connection that closed goes to the next connection. A connection that finds no loop free
/// shares the `shared` ones: a loop made on the accept path (a thread started and waited for)
/// took milliseconds on a busy host, the load runner opened more connections meanwhile, and at
/// 2,100 launches a second the daemon fell behind for good (429s for over 512 requests in
/// flight), where with every connection on the shared loops it held 2,300/s. (NIO's server
/// bootstrap takes a child's loop round robin from a fixed group, so `AgentHTTPServer`
/// accepts these connections itself and hands each socket to the loop `take` gives.)
final class ConnectionLoops: Sendable {
    /// Connections with a loop of their own at most.
    let capacity: Int
    /// Where connections beyond `capacity` go.
    let shared: any EventLoopGroup
    /// Free loops kept ready ahead of connections.
    let spare: Int
    private struct State {
        var groups: [MultiThreadedEventLoopGroup] = []
        /// Loops no connection holds now.
        var free: [any EventLoop] = []
        var making = false
        var shutDown = false
    }
    private let state = Mutex(State())
    private let maker = DispatchQueue(label: "vmfork.connection-loops")

    /// Makes `spare` loops (at most `capacity`) before it returns.
    init(capacity: Int, shared: any EventLoopGroup, spare: Int = 8) {
        self.capacity = capacity
        self.shared = shared
        self.spare = min(spare, capacity)
        for _ in 0..<self.spare { makeLoop() }
    }

    /// A loop for the next connection: a free one of its own (`owned`), or a shared one when
    /// none is free; never waits for a loop to be made.
    func take() -> (loop: any EventLoop, owned: Bool) {
        let (own, refill) = state.withLock { state -> ((any EventLoop)?, Bool) in
            guard !state.shutDown else { return (nil, false) }
            let loop = state.free.popLast()
            let refill = state.free.count < spare && state.groups.count < capacity && !state.making
            if refill { state.making = true }
            return (loop, refill)
        }
        if refill { maker.async { [self] in fill() } }
        if let own { return (own, true) }
        return (shared.next(), false)
    }

    /// Makes loops until `spare` are free or `capacity` are made.
    private func fill() {
        while state.withLock({ !$0.shutDown && $0.free.count < spare && $0.groups.count < capacity }) { makeLoop() }
        state.withLock { $0.making = false }
    }

    private func makeLoop() {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let kept = state.withLock { state -> Bool in
            guard !state.shutDown else { return false }
            state.groups.append(group)
            state.free.append(group.next())
            return true
        }
        if !kept { group.shutdownGracefully { _ in } }
    }

    /// The connection on `loop` (which `take` gave as owned) closed: the loop is free.
    func give(_ loop: any EventLoop) {
        state.withLock { state in
            guard !state.shutDown else { return }
            state.free.append(loop)
        }
    }

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

/// True for the first `claim` only, from any thread.
final class OnceFlag: Sendable {
    private let claimed = Atomic<Bool>(false)

    func claim() -> Bool {
        claimed.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
    }
}
