import CShims
import Foundation

/// The engine worker's seccomp filter (see `cshims_seccomp_install_worker_filter` for the
/// program and Sources/CShims/shims_seccomp.c for the list). A worker installs it once its
/// engine, state and socket are made; from then on every thread of it, and every thread it
/// makes later, may make only the system calls the engine uses. Anything else ends the
/// worker with SIGSYS (SECCOMP_RET_KILL_PROCESS), which the daemon reports as the worker's
/// exit and answers by restarting it.
public enum WorkerSeccomp {
    /// What a call outside the list gets. `VMFORK_WORKER_SECCOMP`: kill (the default), log
    /// (allowed and logged by the kernel: audit type 1326 in the kernel log, to find a
    /// missing call) or off.
    public enum Mode: String, Sendable, Codable, CaseIterable {
        case kill, log, off
    }

    public static let environmentVariable = "VMFORK_WORKER_SECCOMP"

    /// The mode the environment asks for (kill when unset); nil when it names none.
    public static func mode(from environment: [String: String]) -> Mode? {
        guard let text = environment[environmentVariable] else { return .kill }
        return Mode(rawValue: text)
    }

    /// The system calls the filter allows besides clone (threads only), in the order it
    /// compares them.
    public static var allowedCalls: [String] {
        (0..<Int(cshims_seccomp_worker_allowed_count())).compactMap { index in
            cshims_seccomp_worker_allowed_name(Int32(index)).map { String(cString: $0) }
        }
    }

    /// Installs the filter on every thread of this process (nothing for `.off`).
    public static func install(_ mode: Mode) throws(EngineError) {
        let outside: Int32
        switch mode {
        case .off: return
        case .kill: outside = Int32(CSHIMS_SECCOMP_KILL)
        case .log: outside = Int32(CSHIMS_SECCOMP_LOG)
        }
        let result = cshims_seccomp_install_worker_filter(outside)
        if result < 0 { throw EngineError(.failed, "cannot install the worker's seccomp filter: \(String(cString: strerror(-result)))") }
        if result > 0 { throw EngineError(.failed, "cannot install the worker's seccomp filter: thread \(result) could not take it") }
    }

    /// The process's seccomp state from /proc/self/status (0 none, 1 strict, 2 filter).
    public static func currentState() -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("Seccomp:") {
            return Int(line.dropFirst("Seccomp:".count).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }
}
