import Foundation
import Synchronization

/// One launch as the recorder follows it, from its `launched` to its `finished` or `failed`:
/// when it was due and, when the run keeps a trace (`LoadRecorder.tracing`), when each of its
/// moments came.
final class LaunchRecord: Sendable {
    let due: ContinuousClock.Instant
    let entry: Int
    /// When its thread took it (its thread woke from its sleep until the launch was due, or came free late).
    let taken: ContinuousClock.Instant
    let moments = Mutex<(running: ContinuousClock.Instant?, firstOutput: ContinuousClock.Instant?, exit: ContinuousClock.Instant?)>((nil, nil, nil))

    init(due: ContinuousClock.Instant, entry: Int) {
        self.due = due
        self.entry = entry
        taken = .now
    }
}

/// One line of a run's launch trace (`vmfork load --trace`): seconds from the run's start, nil
/// for a moment the launch never reached; `outcome` is "finished" or an error kind.
public struct LaunchTraceRow: Sendable, Equatable {
    public let entry: Int
    public let due: Double
    public let taken: Double
    public let running: Double?
    public let firstOutput: Double?
    public let exit: Double?
    public let ended: Double
    public let outcome: String

    /// The CSV header `csvLine` follows.
    public static let csvHeader = "side,entry,due_s,taken_s,running_s,first_output_s,exit_s,ended_s,outcome"

    public func csvLine(side: String) -> String {
        func field(_ value: Double?) -> String { value.map { String(format: "%.6f", $0) } ?? "" }
        return [side, String(entry), field(due), field(taken), field(running), field(firstOutput), field(exit), field(ended), outcome]
            .joined(separator: ",")
    }
}
