#if canImport(Glibc)
import Glibc
#endif

/// The kernel's per-page view of this process's own mappings (/proc/self/pagemap): for each
/// page, whether it is present and whether it is still the file's or shared memory's page
/// rather than a private copy. A copy-on-write mapping's private pages are exactly the
/// pages written since it was mapped, without tracking any write ourselves.
public enum PageMap {
    private static let present: UInt64 = 1 << 63
    private static let swapped: UInt64 = 1 << 62
    private static let fileOrSharedAnonymous: UInt64 = 1 << 61

    /// Calls `body` with the index of each page in [`address`, `address` + `pages` pages)
    /// that holds a private page: an anonymous copy made on write, or an anonymous page of
    /// an anonymous mapping (read-only touches of those map the zero page and are included).
    public static func forEachPrivatePage(address: UInt, pages: Int, _ body: (Int) -> Void) throws(SystemError) {
        precondition(address % UInt(pageSize) == 0, "pagemap is read for whole pages")
        let file = try FileDescriptor.open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)
        let chunk = 512
        let entries = UnsafeMutablePointer<UInt64>.allocate(capacity: chunk)
        defer { entries.deallocate() }
        var first = 0
        while first < pages {
            let count = min(chunk, pages - first)
            let offset = off_t((address / UInt(pageSize) + UInt(first)) * 8)
            let read = try retryingSyscall("pread(/proc/self/pagemap)") { pread(file.rawValue, entries, count * 8, offset) }
            guard read == count * 8 else { throw SystemError(call: "pread(/proc/self/pagemap) returned \(read) bytes", errno: EIO) }
            for index in 0..<count {
                let entry = entries[index]
                if entry & (present | swapped) != 0 && entry & fileOrSharedAnonymous == 0 { body(first + index) }
            }
            first += count
        }
    }

    private static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
}
