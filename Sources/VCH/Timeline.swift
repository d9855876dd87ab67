import Foundation
import Logging

/// Milliseconds since the VCH started, on the monotonic clock: the debug log's `t` on each
/// request's arrival, its answer's head and end, and each agent call, so that one `docker
/// run`'s requests and the agent calls they make line up (`vch serve --log-level debug`).
enum Timeline {
    private static let origin = ContinuousClock.now

    static var now: Double { VirtualContainerHost.milliseconds(ContinuousClock.now - origin) }

    /// "12.345" (three decimals: microseconds).
    static func stamp() -> Logger.MetadataValue { .string(String(format: "%.3f", now)) }
}
