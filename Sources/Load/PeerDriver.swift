import Foundation
import Synchronization

/// The peers a user would otherwise pick, launched on the same schedule: the program natively
/// with posix_spawn (no isolation at all), or the same program in an OCI container by runc
/// (Docker's default runtime) from a bundle of the same root filesystem.
public enum PeerKind: String, Codable, Sendable, CaseIterable {
    case native
    case runc
}

final class PeerDriver: LaunchDriver {
    struct Launch: Sendable {
        let path: String
        let arguments: [String]
        let environment: [String]
        let stdin: String?
        let lifetime: Duration?
        let expectedExitStatus: Int
    }

    let kind: PeerKind
    let launches: [Launch]
    let runcPath: String?
    private let serial = Atomic<Int>(0)
    private let live = Mutex<[String: pid_t]>([:])

    init(kind: PeerKind, launches: [Launch], runcPath: String?) {
        self.kind = kind
        self.launches = launches
        self.runcPath = runcPath
    }

    func launch(_ arrival: LoadSchedule.Arrival, due: ContinuousClock.Instant, recorder: LoadRecorder) {
        let launch = launches[arrival.entry]
        let record = recorder.launched(due: due, entry: arrival.entry)
        let name = "vmfork-peer-\(getpid())-\(serial.add(1, ordering: .relaxed).oldValue)"
        let process: SpawnedProcess
        do {
            // runc names each container: its name goes last (`runc run --bundle B NAME`).
            let arguments = kind == .runc ? launch.arguments + [name] : launch.arguments
            process = try SpawnedProcess(path: launch.path, arguments: arguments, environment: launch.environment, stdin: launch.stdin)
        } catch {
            return recorder.failed(record, .spawnFailed, "\(error)", at: .now)
        }
        live.withLock { $0[name] = process.pid }
        // Running: the process exists (runc: its runtime has started; the container follows).
        recorder.running(record, at: .now)
        let over = Locked(false)
        if let lifetime = launch.lifetime {
            let left = (due + lifetime) - .now
            let pid = process.pid
            DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(max(0, left / .nanoseconds(1))))) { [self] in
                guard live.withLock({ $0[name] != nil }) else { return }
                over.withLock { $0 = true }
                // runc refuses to kill a container it is still creating: try again while it lives.
                while !Self.end(kind: kind, name: name, pid: pid, runcPath: runcPath), live.withLock({ $0[name] != nil }) {
                    LaunchLoop.sleep(until: .now + .milliseconds(5))
                }
            }
        }
        process.drainOutput { recorder.firstOutput(record, at: .now) }
        let status = process.wait()
        let exitTime = ContinuousClock.now
        live.withLock { _ = $0.removeValue(forKey: name) }
        if !over.withLock({ $0 }) {
            recorder.exited(record, at: exitTime)
            guard status == launch.expectedExitStatus else {
                return recorder.failed(record, .unexpectedExit, "exit \(status), expected \(launch.expectedExitStatus)", at: .now)
            }
        }
        recorder.finished(record, at: .now)
    }

    /// Ends a launch that outlived its lifetime (or the run): native by SIGKILL, runc by `runc kill NAME KILL`.
    /// True when the signal was sent.
    @discardableResult
    static func end(kind: PeerKind, name: String, pid: pid_t, runcPath: String?) -> Bool {
        switch kind {
        case .native:
            return kill(pid, SIGKILL) == 0
        case .runc:
            guard let runcPath, let killer = try? SpawnedProcess(path: runcPath, arguments: ["kill", name, "KILL"], environment: [], stdin: nil) else {
                return false
            }
            killer.drainOutput {}
            return killer.wait() == 0
        }
    }

    func releaseAll() {
        for (name, pid) in live.withLock({ $0 }) { Self.end(kind: kind, name: name, pid: pid, runcPath: runcPath) }
    }
}
