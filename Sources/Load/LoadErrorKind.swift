/// Why a launch failed, one kind per cause a reader would act on differently. Placement's
/// refusals (a pool at its limit, no host fits) are their own kind, apart from other conflicts.
public enum LoadErrorKind: String, Codable, Sendable, CaseIterable, Comparable {
    /// The agent's placement refused the fork: the pool is at its limit or no host fits.
    case placementRefused = "placement_refused"
    /// The agent answered 400: the launch's spec is bad.
    case invalid
    /// The agent answered 404: an unknown image or pool.
    case notFound = "not_found"
    /// The agent answered 409 for another reason than placement.
    case conflict
    /// The agent is shutting down (503).
    case unavailable
    /// The agent turned the connection away (429): more connections were open at once than
    /// its `--max-connections`; backpressure the run reports, apart from the engine's failures.
    case tooManyConnections = "too_many_connections"
    /// The agent failed the call (5xx): KVM, memory, files.
    case engineFailed = "engine_failed"
    /// The container ended within its lifetime with another exit status than expected.
    case unexpectedExit = "unexpected_exit"
    /// The agent could not be reached or broke off the exchange.
    case transport
    /// A peer's process could not be started (posix_spawn failed).
    case spawnFailed = "spawn_failed"

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }

    /// The kind of an agent's error answer: its status, and for a 409 whether placement refused.
    public static func of(status: Int, field: String?, message: String) -> LoadErrorKind {
        switch status {
        case 400, 413, 422: return .invalid
        case 404: return .notFound
        case 409: return field == "pool" || message.hasPrefix("placement refused") ? .placementRefused : .conflict
        case 429: return .tooManyConnections
        case 503: return .unavailable
        default: return .engineFailed
        }
    }
}

/// A load run that cannot start, naming what is wrong.
public struct LoadError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
