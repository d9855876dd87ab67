import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOPosix

/// Per-request state: the connection (for the caller's credentials on the Unix socket) and
/// who the caller is, as the event log records it.
struct AgentContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    /// nil for a call made inside the daemon (`LocalAgentAPI`), which names its caller itself.
    let channel: (any Channel)?
    /// "uid:N" on the Unix socket, "token:NAME" on TCP.
    var actor = "unknown"
    /// Where a route may write its answer before it returns (the agent's own HTTP server on
    /// its Unix socket; nil elsewhere).
    var earlyAnswer: EarlyAnswer?
    /// The request's thread serves its connection alone (a Unix-socket connection on a loop of
    /// its own, `ConnectionLoops`): a route may block it for the length of a run.
    var ownsLoop = false

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// A call made inside the daemon on behalf of `actor` (the web UI's signed-in token).
    init(localCallBy actor: String, logger: Logger) {
        coreContext = .init(source: LocalSource(logger: logger))
        channel = nil
        self.actor = actor
    }

    private struct LocalSource: RequestContextSource {
        let logger: Logger
    }

    var maxUploadSize: Int { AgentLimits.maxBodyBytes }
}

public enum AgentLimits {
    /// Request bodies above this get 413.
    static let maxBodyBytes = 1 << 20
    /// Requests in flight at once above this get 429.
    static let maxRequestsInFlight = 512
    /// Connections served at once on each listener by default (`vmfork serve --max-connections`);
    /// one more is answered 429 and closed (`ConnectionLimit`).
    public static let defaultMaxConnections = 1024
    /// Unix-socket connections served on a thread of their own at most, by default
    /// (`vmfork serve --connection-threads`; `ConnectionLoops`): as many as the cores, the rest
    /// share the cores' loops. With 128, a load run past what the host sustains (2,100-2,300
    /// launches a second here) fell behind for good in most tries (each of 128 connections
    /// forking and running at once, engine CPU per launch doubling, then 429s), where with
    /// every connection on the shared loops it slowed and recovered.
    public static var defaultConnectionThreads: Int { System.coreCount }
    /// Connections accepted at once on a listener, as a multiple of its limit: the ones beyond
    /// the limit are accepted only to be refused, and this bounds the descriptors they hold
    /// under a flood (above it new connections wait in the backlog until one closes).
    static let acceptedPerServed = 2
    /// A connection idle this long (a stalled client) is closed.
    static let idleTimeout = TimeAmount.seconds(30)
}

/// struct ucred of <sys/socket.h> (not imported by Glibc without _GNU_SOURCE): three 32-bit
/// fields, laid out in declaration order with no padding (checked below).
struct PeerCredentials: Sendable {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}

/// SO_PEERCRED on Linux (asm-generic/socket.h).
private let peerCredentialsOption: Int32 = 17

/// Who is on the other end of a Unix socket connection, by the kernel's word (SO_PEERCRED).
func peerCredentials(of channel: any Channel) async -> PeerCredentials? {
    try? await peerCredentialsFuture(of: channel)?.get()
}

/// The same as a future (nil when the channel has no socket options).
func peerCredentialsFuture(of channel: any Channel) -> EventLoopFuture<PeerCredentials>? {
    precondition(MemoryLayout<PeerCredentials>.size == 12, "PeerCredentials must mirror struct ucred")
    guard let provider = channel as? any SocketOptionProvider else { return nil }
    // unsafe: the value type must match the option's C type; PeerCredentials mirrors struct
    // ucred field for field (12 bytes, asserted above), which is what SO_PEERCRED returns.
    return provider.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(peerCredentialsOption))
}
