#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// CPU time the kernel charged to a process or to one of this process's threads (user +
/// system, from /proc's stat files: fields 14 and 15, in clock ticks).
public enum CPUTime {
    /// Of process `pid`, all its threads.
    public static func ofProcess(_ pid: pid_t) -> Double? {
        seconds(statFile: "/proc/\(pid)/stat")
    }

    /// Of this process's thread `threadID` (its kernel id, as gettid gives it), or of process
    /// `pid`'s (a worker's, read by its daemon).
    public static func ofThread(_ threadID: pid_t, of pid: pid_t? = nil) -> Double? {
        seconds(statFile: "/proc/\(pid.map(String.init) ?? "self")/task/\(threadID)/stat")
    }

    /// Of the whole host, every CPU (/proc/stat's first line: user to steal; guest time is
    /// in user already), as Docker's system_cpu_usage counts it.
    public static func ofHost() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let line = text.split(separator: "\n").first, line.hasPrefix("cpu ") else { return nil }
        let ticks = line.split(separator: " ").dropFirst().prefix(8).compactMap { Double($0) }
        guard ticks.count == 8 else { return nil }
        return ticks.reduce(0, +) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    static func seconds(statFile: String) -> Double? {
        guard let text = try? String(contentsOfFile: statFile, encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        // Fields after the command's closing parenthesis start at field 3 (state).
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}
