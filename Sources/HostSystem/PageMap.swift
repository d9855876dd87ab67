import CShims
#if canImport(Glibc)
import Glibc
#endif

/// The kernel's per-page view of this process's own mappings (/proc/self/pagemap), read only
/// for the ranges asked: one 64-bit entry per page, saying whether it is present, whether it
/// is still the file's or shared memory's page rather than a private copy, and whether it is
/// mapped exactly once (its map count is 1).
///
/// As a value, a reader for one measurement on one thread (it keeps its descriptor and
/// buffer): `usage(of:length:)` sums the kernel's accounting of a range, the figures
/// /proc/self/smaps sums per mapping — but each read of smaps walks and formats every mapping
/// of the process (with 1,000 live VMs, about a second), while the page map of one VM's guest
/// memory costs in proportion to that memory alone. smaps counts a resident page mapped once
/// Private and one mapped more than once Shared; so does `usage`. (The page frame numbers in
/// the low bits need CAP_SYS_ADMIN and are not read.)
public final class PageMap {
    private static let present: UInt64 = 1 << 63
    private static let swapped: UInt64 = 1 << 62
    private static let fileOrSharedAnonymous: UInt64 = 1 << 61
    /// Bit numbers of PM_PRESENT and PM_MMAP_EXCLUSIVE, for counting without branches.
    private static let presentBit: UInt64 = 63
    private static let exclusiveBit: UInt64 = 56
    private static let entrySize = MemoryLayout<UInt64>.size
    /// Entries one read of a reader takes: 32 KiB, those of 16 MiB of address space.
    private static let entriesPerRead = 4096

    /// Runs one PAGEMAP_SCAN call returns at most (three words each).
    private static let runsPerScan = 256

    private let file: FileDescriptor
    private var entries: [UInt64]
    /// PAGEMAP_SCAN's answers (start, end, categories per run); empty until first used.
    private var runs: [UInt64] = []
    /// Whether this reader asks with PAGEMAP_SCAN (Linux 6.7); false after the kernel refused once.
    public private(set) var scans = true

    /// `scanning` false: `forEachPrivatePage` reads every entry even where the kernel has
    /// PAGEMAP_SCAN (the tests compare the two).
    public init(scanning: Bool = true) throws(SystemError) {
        scans = scanning
        file = try FileDescriptor.open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)
        entries = [UInt64](repeating: 0, count: Self.entriesPerRead)
    }

    /// The kernel's accounting of the pages of [start, start + length), summed. The caller
    /// keeps the range mapped during the call (a page not mapped reads as not resident).
    public func usage(of start: UInt, length: Int) throws(SystemError) -> MappingUsage {
        var page = Int(start) / Self.pageSize
        let end = (Int(start) + length + Self.pageSize - 1) / Self.pageSize
        var present = 0, exclusive = 0
        while page < end {
            let wanted = min(end - page, Self.entriesPerRead)
            let offset = off_t(page * Self.entrySize)
            let bytes = try retryingSyscall("pread(/proc/self/pagemap, page \(page))") {
                // unsafe: wanted <= entriesPerRead, so pread's wanted * 8 bytes fit `entries`, during the closure.
                entries.withUnsafeMutableBytes { pread(file.rawValue, $0.baseAddress, wanted * Self.entrySize, offset) }
            }
            let read = bytes / Self.entrySize
            guard read > 0 else { throw SystemError(call: "pread(/proc/self/pagemap, page \(page)) read nothing", errno: EIO) }
            for entry in entries[..<read] {
                let resident = Int(truncatingIfNeeded: (entry >> Self.presentBit) & 1)
                present += resident
                exclusive += resident & Int(truncatingIfNeeded: (entry >> Self.exclusiveBit) & 1)
            }
            page += read
        }
        let size = Self.pageSize
        return MappingUsage(resident: present * size, shared: (present - exclusive) * size, privateBytes: exclusive * size)
    }

    /// Calls `body` with the index of each page in [`address`, `address` + `pages` pages)
    /// that holds a private page: an anonymous copy made on write, or an anonymous page of
    /// an anonymous mapping (read-only touches of those map the zero page and are included),
    /// and whether the page is mapped exactly once (a page of its own: not the zero page).
    /// A reader kept for many calls (a pooled VM's memory keeps one for its restores) saves
    /// an open and close of /proc/self/pagemap per call, and reads 16 MiB of address space a call.
    ///
    /// Where the kernel has PAGEMAP_SCAN, it is asked for the runs of such pages instead:
    /// the kernel skips the rest, and a pooled VM's restore read 16 MiB of entries to find a
    /// few dozen pages (the reads were 8 % of the engine's CPU per `busybox echo` at 1,400
    /// launches a second). PAGEMAP_SCAN does not tell whether a page is mapped once; a private
    /// page of its own (anonymous, not the zero page) counts as mapped once, as it is in a
    /// process that neither forks nor merges pages (KSM).
    public func forEachPrivatePage(address: UInt, pages: Int, _ body: (Int, Bool) -> Void) throws(SystemError) {
        precondition(address % UInt(Self.pageSize) == 0, "pagemap is read for whole pages")
        if scans, try scanPrivatePages(address: address, pages: pages, body) { return }
        var first = 0
        while first < pages {
            let wanted = min(Self.entriesPerRead, pages - first)
            let offset = off_t((address / UInt(Self.pageSize) + UInt(first)) * UInt(Self.entrySize))
            let bytes = try retryingSyscall("pread(/proc/self/pagemap)") {
                // unsafe: pread writes wanted * 8 bytes and wanted <= entriesPerRead, the array's count of UInt64s.
                entries.withUnsafeMutableBytes { pread(file.rawValue, $0.baseAddress, wanted * Self.entrySize, offset) }
            }
            guard bytes == wanted * Self.entrySize else { throw SystemError(call: "pread(/proc/self/pagemap) returned \(bytes) bytes", errno: EIO) }
            for index in 0..<wanted {
                let entry = entries[index]
                if entry & (Self.present | Self.swapped) != 0 && entry & Self.fileOrSharedAnonymous == 0 {
                    body(first + index, entry & (1 << Self.exclusiveBit) != 0)
                }
            }
            first += wanted
        }
    }

    /// `forEachPrivatePage` through PAGEMAP_SCAN; false, with `body` never called, when the
    /// kernel has no PAGEMAP_SCAN (then `scans` is false for this reader's later calls).
    private func scanPrivatePages(address: UInt, pages: Int, _ body: (Int, Bool) -> Void) throws(SystemError) -> Bool {
        do {
            try scanRuns(address: address, pages: pages, call: "PAGEMAP_SCAN", ask: cshims_pagemap_private_runs) { first, last, zero in
                for page in first..<last { body(page, !zero) }
            }
        } catch {
            if error.beforeFirstRun && (error.errno == ENOTTY || error.errno == EINVAL) {
                scans = false
                return false
            }
            throw error.error
        }
        return true
    }

    /// One of PAGEMAP_SCAN's questions (`ask`, a shim) over [address, address + pages pages),
    /// asked again from where the walk stopped until it reaches the end; `run` gets each run
    /// of pages found, as page indices from `address`, and whether it is the zero page. Every
    /// run is checked to lie, in order, inside what was asked.
    private typealias Ask = (Int32, UInt64, UInt64, UnsafeMutablePointer<UInt64>?, Int, UnsafeMutablePointer<UInt64>?) -> Int

    private struct ScanFailure: Error {
        let error: SystemError
        /// Whether it failed before any run was found (the question is not this kernel's).
        let beforeFirstRun: Bool
        var errno: Int32 { error.errno }
    }

    private func scanRuns(address: UInt, pages: Int, call: String, ask: Ask, _ run: (Int, Int, Bool) -> Void) throws(ScanFailure) {
        let size = UInt64(Self.pageSize)
        let start = UInt64(address), end = start + UInt64(pages) * size
        if runs.isEmpty { runs = [UInt64](repeating: 0, count: 3 * Self.runsPerScan) }
        var from = start
        while from < end {
            var walkEnd: UInt64 = 0
            // unsafe: `runs` holds runsPerScan regions of three UInt64s, and the scan is given runsPerScan as its capacity.
            let found = runs.withUnsafeMutableBufferPointer { ask(file.rawValue, from, end, $0.baseAddress, Self.runsPerScan, &walkEnd) }
            if found < 0 {
                if errno == EINTR { continue }
                throw ScanFailure(error: SystemError(call: "ioctl(/proc/self/pagemap, \(call))", errno: errno), beforeFirstRun: from == start)
            }
            var reached = from
            for index in 0..<found {
                let first = runs[3 * index], last = runs[3 * index + 1]
                guard first >= reached, last <= end, first < last, first % size == 0, last % size == 0 else {
                    throw ScanFailure(error: SystemError(call: "ioctl(/proc/self/pagemap, \(call)) returned run \(first)..<\(last) outside \(reached)..<\(end)", errno: EIO),
                                      beforeFirstRun: false)
                }
                run(Int((first - start) / size), Int((last - start) / size), runs[3 * index + 2] & CSHIMS_PAGE_IS_PFNZERO != 0)
                reached = last
            }
            guard walkEnd > from, walkEnd <= end, walkEnd >= reached else {
                throw ScanFailure(error: SystemError(call: "ioctl(/proc/self/pagemap, \(call)) stopped at \(walkEnd) in \(from)..<\(end)", errno: EIO),
                                  beforeFirstRun: false)
            }
            from = walkEnd
        }
    }

    /// Calls `body` with the index of each page in [`address`, `address` + `pages` pages)
    /// that was written since its write protection (`WriteTracking`) and is present or
    /// swapped: each a page of its own (a private mapping's copy, or an anonymous page). The
    /// zero page, which a read maps where the range is registered but was never protected,
    /// is left out. Throws with EPERM when a mapping in the range is not registered for
    /// asynchronous write protection (the kernel checks: PM_SCAN_CHECK_WPASYNC), and with
    /// ENOTTY or EINVAL on a kernel without PAGEMAP_SCAN.
    public func forEachWrittenPage(address: UInt, pages: Int, _ body: (Int) -> Void) throws(SystemError) {
        precondition(address % UInt(Self.pageSize) == 0, "pagemap is read for whole pages")
        do {
            try scanRuns(address: address, pages: pages, call: "PAGEMAP_SCAN for written pages", ask: cshims_pagemap_written_runs) { first, last, zero in
                guard !zero else { return }
                for page in first..<last { body(page) }
            }
        } catch {
            throw error.error
        }
    }

    /// `forEachPrivatePage` with a reader of its own, for one call.
    public static func forEachPrivatePage(address: UInt, pages: Int, _ body: (Int, Bool) -> Void) throws(SystemError) {
        try PageMap().forEachPrivatePage(address: address, pages: pages, body)
    }

    private static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
}
