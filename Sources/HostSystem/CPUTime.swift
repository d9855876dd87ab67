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

    /// Of this process's thread `threadID` (its kernel id, as gettid gives it).
    public static func ofThread(_ threadID: pid_t) -> Double? {
        seconds(statFile: "/proc/self/task/\(threadID)/stat")
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
