#if canImport(Glibc)
import Glibc
#endif

/// The kernel's table of this process's descriptors. It grows by doubling the first time a
/// descriptor past its end is handed out, and in a process of more than one thread the growth
/// waits out an RCU grace period (`expand_fdtable`'s `synchronize_rcu`) while every other
/// thread that opens, accepts or duplicates a descriptor meanwhile waits for it too. Under
/// load on this kind of machine each growth held the daemon's connection threads for 11-14 ms
/// (`perf sched timehist -g`, 2026-12-07), enough alone to put a second's p99 past 5 ms.
/// Grown once at the start, before any load, the table never grows on a launch's path (Linux
/// never shrinks it): 8 bytes a slot.
public enum DescriptorTable {
    /// Slots the engine's table is grown to at its start: several times the most descriptors
    /// a daemon held in load runs here (362 at 2,300 launches a second).
    public static let engineReserve = 4096

    /// Grows the table to at least `count` slots (at most the descriptor limit). Returns the
    /// size the kernel reports afterwards, or nil when it could not be read.
    @discardableResult
    public static func reserve(_ count: Int) -> Int? {
        let top = Int32(clamping: min(count, DescriptorLimit.raised) - 1)
        if top > 0, (size() ?? 0) < Int(top) + 1 {
            let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
            if null >= 0 {
                // The lowest free descriptor at or past `top`: never one in use.
                let high = fcntl(null, F_DUPFD_CLOEXEC, top)
                if high >= 0 { close(high) }
                close(null)
            }
        }
        return size()
    }

    /// The table's size now (`FDSize` of /proc/self/status).
    public static func size() -> Int? {
        let fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 8192)
        var filled = 0
        while filled < bytes.count {
            // unsafe: the pointer is into the array's own storage, offset below its count, for the call.
            let count = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + filled, $0.count - filled) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            filled += count
        }
        let text = String(decoding: bytes[..<filled], as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("FDSize:") }) else { return nil }
        return Int(String(line.dropFirst("FDSize:".count).filter(\.isNumber)))
    }
}
