import Foundation

/// Numbers and times as the pages print them.
enum Format {
    static func mib(kib: Int) -> String { mib(bytes: Double(kib) * 1024) }
    static func mib(bytes: Int) -> String { mib(bytes: Double(bytes)) }

    static func mib(bytes: Double) -> String {
        let mib = bytes / 1_048_576
        if bytes == 0 { return "0 MiB" }
        if bytes > 0 && bytes < 1_048_576 { return String(format: "%.0f KiB", bytes / 1024) }
        if mib >= 10240 { return String(format: "%.1f GiB", mib / 1024) }
        if mib >= 100 { return String(format: "%.0f MiB", mib) }
        return String(format: "%.1f MiB", mib)
    }

    static func time(_ seconds: Double?) -> String {
        guard let seconds else { return "" }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss 'UTC'"
        return formatter.string(from: Date(timeIntervalSince1970: seconds))
    }

    static func duration(_ seconds: Double) -> String {
        let total = Int(max(0, seconds))
        if total < 60 { return "\(total) s" }
        if total < 3600 { return "\(total / 60) min \(total % 60) s" }
        if total < 86400 { return "\(total / 3600) h \(total % 3600 / 60) min" }
        return "\(total / 86400) d \(total % 86400 / 3600) h"
    }

    static func microseconds(_ value: Double?) -> String {
        guard let value else { return "" }
        return value >= 1000 ? String(format: "%.2f ms", value / 1000) : String(format: "%.0f µs", value)
    }

    static func percent(_ part: Int, of whole: Int) -> Int {
        guard whole > 0 else { return 0 }
        return min(100, max(0, Int((Double(part) / Double(whole) * 100).rounded())))
    }

    /// A program's arguments as one line, quoting those with spaces.
    static func command(_ arguments: [String]) -> String {
        arguments.map { $0.contains(" ") || $0.isEmpty ? "\"\($0)\"" : $0 }.joined(separator: " ")
    }
}
