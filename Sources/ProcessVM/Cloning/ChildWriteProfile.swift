import Foundation

/// The pages a fork point's children write, learned from the first children whose VMs came
/// back, so that a VM made for the pool ahead of time can take those writes' costs before its
/// child runs, as a reused VM already has.
///
/// Why: under PVM's shadow paging a VM's first write to a page it reads through a read-only
/// translation is a VM exit, and so is its first touch of a page the engine wrote from the
/// host after the VM read it (the host's copy-on-write moves the page, and KVM drops its
/// translation). A `busybox echo` child of a new VM made 17 exits against 2 in a reused one
/// (traced: ~7 write faults and ~8 walks, on the stack, `.data`, `.bss` and the mailbox).
/// Under a burst the pool hands out VMs it made but never used, and each such child cost
/// ~2 ms more with 150 µs exits.
///
/// What a VM made ready does with the profile (`PreparedVM.warmUpWrites`): the host copies the
/// profile's frames on write (MADV_POPULATE_WRITE, contents unchanged), and the warm-up routine
/// then reads every listed page and writes back the writable ones, so that KVM holds writable
/// translations of the VM's own copies, before it reads the parent's pages ahead. The memory
/// this costs is what a reused VM holds anyway (11 pages for a `busybox echo`).
///
/// `@unchecked Sendable`: every `var` is read and written under `lock`; outside it `record` reads only the fork
/// point's frozen `space`.
final class ChildWriteProfile: @unchecked Sendable {
    private let lock = NSLock()
    private var samples = 0
    private var pages: [UInt64: Bool] = [:]
    private var learned: Learned?

    /// Returned children whose written pages make up the profile.
    static let samplesWanted = 4
    /// The most pages the profile lists (what the VM's own warm-up list holds); each costs
    /// every ready VM a private page, as it costs a reused one.
    static let maximumPages = SystemArea.warmUpOwnListCapacity

    /// What a prepared VM does with the profile.
    struct Learned: Sendable {
        /// Guest-physical frames to copy on write from the host (sorted).
        let frames: [UInt64]
        /// The warm-up list of the written pages (`SystemArea.warmUpListBytes`), those the
        /// program may write with `warmUpWriteBack` set, for the VM's own list
        /// (`SystemArea.warmUpOwnList`); the routine reads the parent's list after it.
        let list: [UInt8]
    }

    /// The profile, once its first sample is in (nil before any child came back).
    var current: Learned? { lock.withLock { learned } }

    var wantsSamples: Bool { lock.withLock { samples < Self.samplesWanted } }

    /// Adds the pages behind the frames a returned child had its own copies of (`written`,
    /// guest-physical) that the parent maps: the system pages below the program's and every
    /// page of its regions.
    func record(written: Set<UInt64>, forkPoint: ForkPoint) {
        guard wantsSamples, !written.isEmpty else { return }
        var found: [UInt64: (frame: UInt64, writable: Bool)] = [:]
        let space = forkPoint.space
        var ranges: [(start: UInt64, end: UInt64)] = [(0, AddressSpace.userBottom)]
        ranges += space.regions
        outer: for range in ranges {
            var page = range.start
            while page < range.end {
                if let (frame, permissions) = space.tables.translate(page), written.contains(frame) {
                    found[page] = (frame, permissions.isSuperset(of: [.write, .user]))
                    if found.count >= Self.maximumPages { break outer }
                }
                page += AddressSpace.pageSize
            }
        }
        lock.withLock {
            samples += 1
            for (page, entry) in found where pages.count < Self.maximumPages { pages[page] = entry.writable }
            learned = Self.learned(pages: pages, forkPoint: forkPoint)
        }
    }

    private static func learned(pages: [UInt64: Bool], forkPoint: ForkPoint) -> Learned {
        let sorted = pages.keys.sorted()
        let entries = sorted.map { pages[$0] == true ? $0 | SystemArea.warmUpWriteBack : $0 }
        let frames = sorted.compactMap { forkPoint.space.tables.translate($0)?.frame }
        return Learned(frames: frames, list: SystemArea.warmUpListBytes(entries))
    }
}
