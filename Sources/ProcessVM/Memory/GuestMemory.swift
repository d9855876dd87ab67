import CShims
import HostSystem
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What restoring a fork child's memory found (see `GuestMemory.restoreOrigin`).
struct RestoredFrames {
    /// Frames the child had its own copy of; they still do, restored. (With write tracking,
    /// not the zero page a read of an anonymous hole maps: it was never written.)
    let owned: Set<UInt64>
    /// Of those, the pages of its own (written, by the guest or the engine): not the zero
    /// page that a read of an anonymous hole maps.
    let copies: Set<UInt64>
    /// Frames whose shadow translations were dropped during the child's life or by the restore.
    let invalidated: Set<UInt64>
}

/// Guest-physical memory of one process VM: a memfd mapped into the engine, handed out in
/// 4 KiB frames. Everything the guest needs — page tables, system tables, the program, its
/// stack and heap — lives here, so a fork only has to map this memfd copy-on-write.
///
/// The memfd's size is the VM's memory limit: when frames run out the guest gets ENOMEM,
/// never the host's OOM killer. Frames are populated by the host kernel on first touch.
///
/// The exception: frames holding a program's read-only pages may be mapped straight from
/// its file (`mapFile`), so a fresh VM reads them from the page cache instead of copying
/// them. They are gathered into the memfd before the first copy-on-write child is made.
///
/// `@unchecked Sendable`: besides the `let`s (`fileBackedRanges` a Mutex), every `var` is used only by the thread holding
/// the process's `machineState` or by the one thread holding a VM that does not run; a fork point's memory is only read.
public final class GuestMemory: @unchecked Sendable {
    public static let pageSize = 4096
    public let size: Int
    /// The memfd that backs this memory (the parent's, for a fork child).
    public let memfd: FileDescriptor
    let mapping: MappedMemory
    /// Next never-used frame; frames above it have never been written and read as zero.
    private(set) var bumpFrame: UInt64
    /// The highest `bumpFrame` this memory has had, over every child a reused VM served: the
    /// engine has never put a frame at or above it in a page table, so no translation the
    /// guest could have built reaches above it. A restore looks at every frame below it.
    private var highWaterFrame: UInt64
    /// Frames given back by munmap, re-zeroed before reuse.
    private var freeFrames: [UInt64] = []
    /// Of a fork child: frames taken from `freeFrames` since the fork (with those above the
    /// parent's `bumpFrame`, the frames it was handed).
    /// A set, as `invalidatedFrames`: a child mapping and unmapping in a loop must not grow it.
    private var reusedFreeFrames: Set<UInt64> = []
    /// Of a fork child: frames whose translations were dropped since the fork, because the
    /// child changed a mapping of them. It may have used the changed mapping since (a page
    /// moved by mremap, made writable by mprotect), so they are dropped again at the restore.
    private var invalidatedFrames: Set<UInt64> = []
    /// Frames the engine holds records of for the next restore (free, reused since the fork,
    /// translations dropped since the fork): bounded by the memory's frames whatever the guest
    /// maps and unmaps. Read while the VM does not run.
    var recordedFrames: Int { freeFrames.count + reusedFreeFrames.count + invalidatedFrames.count }
    /// For a fork child: the parent whose memory this maps copy-on-write, and the parent's holes.
    private let origin: (memory: GuestMemory, holes: [Range<Int>])?
    /// A fork child's reader of the kernel's page map, opened at its first restore and kept
    /// for the next children a pooled VM serves. Used while the VM does not run.
    private var pageMap: PageMap?
    /// A fork child's record of the pages written since it was made (`WriteTracking`), which
    /// its restores and forks ask for instead of the pages it owns: the same pages, the zero
    /// page apart (no writer leaves one), found without looking at each mapped page of the
    /// parent. Nil where the kernel or the process cannot (then they ask for the private pages).
    private var writeTracking: WriteTracking?
    /// Whether this memory's restores find its pages through `writeTracking`.
    public var tracksWrites: Bool { writeTracking != nil }
    /// Byte ranges of this memory mapped from a file rather than the memfd.
    private let fileBackedRanges = Mutex<[Range<Int>]>([])

    /// Creates fresh zeroed memory of `size` bytes (a multiple of the page size).
    public init(size: Int) throws(SystemError) {
        precondition(size % Self.pageSize == 0 && size > 0, "guest memory size must be whole pages")
        self.size = size
        memfd = try makeMemfd(name: "vmfork-guest", size: size)
        mapping = try MappedMemory(length: size, flags: MAP_SHARED, fd: memfd.rawValue)
        bumpFrame = UInt64(Self.pageSize) // frame 0 stays unused so that physical 0 is never valid
        highWaterFrame = bumpFrame
        origin = nil
    }

    /// Maps a parent's memory copy-on-write: reads see the parent's bytes, writes are private
    /// to this child and never reach the parent's memfd.
    ///
    /// Only the parent's data is mapped from its memfd: every hole (pages the parent never
    /// wrote, which read as zero) of `smallestAnonymousHole` or more is mapped anonymous
    /// instead. A child touching such a page then gets a fresh zero page, without allocating
    /// one in the parent's memfd (which would grow the parent with every child's reads) and
    /// without a copy on write. `holes` are the parent's, from `holes()`: a frozen parent's
    /// never change, so they are found once (a restore still compares a hole's pages with zeros).
    public init(copyOnWriteOf parent: GuestMemory, holes: [Range<Int>]) throws(SystemError) {
        size = parent.size
        let fd = try retryingSyscall("fcntl(parent memfd, F_DUPFD_CLOEXEC)") { fcntl(parent.memfd.rawValue, F_DUPFD_CLOEXEC, 0) }
        memfd = FileDescriptor(adopting: fd)
        mapping = try MappedMemory(length: size, flags: MAP_PRIVATE, fd: fd)
        bumpFrame = parent.bumpFrame
        highWaterFrame = parent.bumpFrame
        freeFrames = parent.freeFrames
        origin = (parent, holes)
        for hole in holes where hole.count >= Self.smallestAnonymousHole {
            let target = mapping.base.advanced(by: hole.lowerBound)
            guard mmap(target, hole.count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == target else {
                throw SystemError(call: "mmap(anonymous hole of \(hole.count) bytes)", errno: errno)
            }
        }
        // Every frame a child can reach to start with (below the parent's bump frame) is
        // protected before any is touched; above it, only fresh anonymous pages can appear.
        writeTracking = try? WriteTracking(start: hostAddress, length: size, protected: Int(highWaterFrame))
    }

    /// The smallest of a parent's holes a child maps anonymous. A smaller one stays in the
    /// mapping of the parent's memfd: a child's read there puts a zero page in the memfd, one
    /// all the parent's children then share (a few pages at most, read-only to them like the
    /// rest), where an anonymous hole costs two more mappings, and every restore's question to
    /// the page map walks mapping by mapping (about 0.5 µs each). busybox's parent has seven
    /// holes under 64 KiB: 14 of its children's 21 mappings.
    static let smallestAnonymousHole = 64 << 10

    /// A copy of a running process's memory for its fork(2) child, taken while the process is
    /// stopped in the call. A process whose memory maps a frozen warm parent copy-on-write
    /// gets a child that maps the same parent the same way (the instant clone), plus copies
    /// of the pages the process owns (the kernel's pagemap says which). Any other process's
    /// memory is its own memfd, which it keeps writing: the child gets a new memfd with the
    /// data pages copied (SEEK_DATA; never-written pages stay holes). Either way the frame
    /// allocator is the process's, so the child's page tables, which are in the copied
    /// frames, stay right.
    public convenience init(forkOf process: GuestMemory) throws(SystemError) {
        if let (base, holes) = process.origin {
            try self.init(copyOnWriteOf: base, holes: holes)
            var owned: [Int] = []
            let pages = Int(process.highWaterFrame) / Self.pageSize
            if process.writeTracking != nil {
                try PageMap().forEachWrittenPage(address: process.hostAddress, pages: pages) { owned.append($0) }
            } else {
                try PageMap.forEachPrivatePage(address: process.hostAddress, pages: pages) { page, _ in owned.append(page) }
            }
            for page in owned {
                let offset = page * Self.pageSize
                // Both mappings cover `size` bytes and `page` lies below the high-water frame.
                mapping.base.advanced(by: offset).copyMemory(from: process.mapping.base.advanced(by: offset), byteCount: Self.pageSize)
            }
        } else {
            try self.init(size: process.size)
            let holes = try process.holes()
            var offset = 0
            for range in holes + [process.size..<process.size] {
                let end = min(range.lowerBound, Int(process.bumpFrame))
                if offset < end {
                    // Both mappings cover `size` bytes; [offset, end) lies inside them.
                    mapping.base.advanced(by: offset).copyMemory(from: process.mapping.base.advanced(by: offset), byteCount: end - offset)
                }
                offset = max(offset, range.upperBound)
            }
        }
        bumpFrame = process.bumpFrame
        highWaterFrame = max(process.highWaterFrame, process.bumpFrame)
        freeFrames = process.freeFrames
    }

    /// Maps `length` bytes of `file` from `offset` privately over guest-physical `physical`
    /// (all page-aligned): the guest reads the page cache, and a write — by the guest after
    /// an mprotect, or by the engine reusing the frame — copies the page for this VM alone.
    /// The file must not shrink while mapped (as Linux forbids for a running executable):
    /// touching a page past its end would raise SIGBUS.
    func mapFile(_ file: Int32, offset: Int, physical: UInt64, length: Int) throws(SystemError) {
        precondition(offset % Self.pageSize == 0 && physical % UInt64(Self.pageSize) == 0 && length % Self.pageSize == 0)
        // A copy-on-write child (an execve in it) reads the file instead: its memfd is its
        // parent's, which neither the fallback below nor a later gathering may write.
        guard origin == nil else { throw SystemError(call: "mmap(executable) in a copy-on-write child", errno: EPERM) }
        guard let target = pointer(physical: physical, length: length) else { preconditionFailure("file mapping outside guest memory") }
        guard mmap(target, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, file, off_t(offset)) == target else {
            let error = SystemError(call: "mmap(executable, \(length) bytes at offset \(offset))", errno: errno)
            // A failed MAP_FIXED may have unmapped the range: put the memfd back there.
            guard mmap(target, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, memfd.rawValue, off_t(physical)) == target else {
                preconditionFailure("guest memory lost its mapping: \(SystemError(call: "mmap(guest memfd)", errno: errno))")
            }
            throw error
        }
        fileBackedRanges.withLock { $0.append(Int(physical)..<(Int(physical) + length)) }
    }

    /// Copies every file-backed range into the memfd and maps the memfd back over it, so
    /// that the memfd holds all of this memory, as a copy-on-write child expects.
    private func gatherFileBackedRanges() throws(SystemError) {
        try fileBackedRanges.withLock { ranges throws(SystemError) in
            while let range = ranges.last {
                let source = mapping.base.advanced(by: range.lowerBound)
                var done = 0
                while done < range.count {
                    done += try retryingSyscall("pwrite(guest memfd)") {
                        pwrite(memfd.rawValue, source + done, range.count - done, off_t(range.lowerBound + done))
                    }
                }
                guard mmap(source, range.count, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, memfd.rawValue, off_t(range.lowerBound)) == source else {
                    throw SystemError(call: "mmap(guest memfd over \(range.count) file-backed bytes)", errno: errno)
                }
                ranges.removeLast()
            }
        }
    }

    /// The byte ranges of this memory's memfd that hold no data (SEEK_HOLE/SEEK_DATA),
    /// page-aligned and in order, for copy-on-write children. File-backed ranges are
    /// gathered into the memfd first, so that the memfd holds all of this memory.
    public func holes() throws(SystemError) -> [Range<Int>] {
        try gatherFileBackedRanges()
        try discardNeverUsedFrames()
        let fd = memfd.rawValue
        var holes: [Range<Int>] = []
        var offset = 0
        while offset < size {
            let holeStart = lseek(fd, off_t(offset), CSHIMS_SEEK_HOLE)
            guard holeStart >= 0 else { throw SystemError(call: "lseek(SEEK_HOLE)", errno: errno) }
            if Int(holeStart) >= size { break }
            var dataStart = lseek(fd, holeStart, CSHIMS_SEEK_DATA)
            if dataStart < 0 {
                guard errno == ENXIO else { throw SystemError(call: "lseek(SEEK_DATA)", errno: errno) }
                dataStart = off_t(size)
            }
            let start = (Int(holeStart) + Self.pageSize - 1) & ~(Self.pageSize - 1)
            let end = min(size, Int(dataStart)) & ~(Self.pageSize - 1)
            if start < end { holes.append(start..<end) }
            offset = Int(dataStart)
        }
        return holes
    }

    /// Gives back whatever the memfd holds at or above `bumpFrame`: nothing the engine
    /// handed out, so nothing but bytes a guest put there behind the engine's back. Children
    /// are handed those frames as fresh zeroed pages, so a frozen parent's must read as zero.
    private func discardNeverUsedFrames() throws(SystemError) {
        let start = Int(bumpFrame)
        guard start < size else { return }
        guard madvise(mapping.base.advanced(by: start), size - start, MADV_REMOVE) == 0 else {
            throw SystemError(call: "madvise(guest memory above frame \(start), MADV_REMOVE)", errno: errno)
        }
    }

    /// Returns a fork child's memory to its parent's content so that its VM can serve another
    /// child: each page the child owns (the kernel's pagemap says which) is compared with the
    /// parent's page, or with zeros in the parent's holes, and rewritten where it differs; the
    /// frame allocator goes back to the parent's. Rewritten pages stay this mapping's private
    /// pages, so the VM's shadow translations of them stay valid and the next child writes
    /// them without a fault. Returns the frames it owns and those whose translations were
    /// dropped, or nil, with nothing changed, when it owns more than `maximumPrivatePages`
    /// (more than a pooled VM should hold).
    /// `retiredFrames` are frames whose mappings the child changed and whose translations
    /// were not dropped yet (it ended first).
    func restoreOrigin(maximumPrivatePages: Int, retiredFrames: [UInt64]) throws(SystemError) -> RestoredFrames? {
        guard let (parent, holes) = origin else { preconditionFailure("only a fork child's memory has an origin") }
        // Every frame the guest could have written: all below the high-water mark, whether or
        // not the engine still knows of a mapping of it.
        var owned: [Int] = []
        let pageMap: PageMap
        if let kept = self.pageMap {
            pageMap = kept
        } else {
            pageMap = try PageMap()
            self.pageMap = pageMap
        }
        var copies: Set<UInt64> = []
        let pages = Int(highWaterFrame) / Self.pageSize
        if writeTracking != nil {
            // Written since the memory was made: never protected again, so every page the VM's
            // children made their own, as the private pages below but for the zero page. (Not
            // the private pages here: the protection's markers on pages never mapped read as
            // swapped pages in the page map.)
            try pageMap.forEachWrittenPage(address: hostAddress, pages: pages) { page in
                owned.append(page)
                copies.insert(UInt64(page * Self.pageSize))
            }
        } else {
            try pageMap.forEachPrivatePage(address: hostAddress, pages: pages) { page, exclusive in
                owned.append(page)
                if exclusive { copies.insert(UInt64(page * Self.pageSize)) }
            }
        }
        guard owned.count <= maximumPrivatePages else { return nil }
        var holeIndex = 0
        for page in owned {
            let offset = page * Self.pageSize
            while holeIndex < holes.count && holes[holeIndex].upperBound <= offset { holeIndex += 1 }
            let target = mapping.base.advanced(by: offset)
            if holeIndex < holes.count && holes[holeIndex].contains(offset) {
                // unsafe: page < highWaterFrame / pageSize, so the page-aligned frame's 512 words lie in the mapping; the child no longer runs.
                let words = UnsafeBufferPointer(start: target.assumingMemoryBound(to: UInt64.self), count: Self.pageSize / 8)
                if words.contains(where: { $0 != 0 }) { target.initializeMemory(as: UInt8.self, repeating: 0, count: Self.pageSize) }
            } else {
                let source = parent.mapping.base.advanced(by: offset)
                if memcmp(target, source, Self.pageSize) != 0 { target.copyMemory(from: source, byteCount: Self.pageSize) }
            }
        }
        // Whatever the child mapped is unmapped by the restore of its page tables, and every
        // mapping it changed is changed back: KVM's translations of all those frames must go,
        // including those dropped during its life and built again through the new mapping
        // (a page it moved and used at its new address; a read-only page it made writable).
        try invalidateTranslations(ofFrames: Array(stride(from: parent.bumpFrame, to: bumpFrame, by: Self.pageSize))
            + Array(reusedFreeFrames) + retiredFrames + Array(invalidatedFrames))
        bumpFrame = parent.bumpFrame
        freeFrames = parent.freeFrames
        reusedFreeFrames.removeAll()
        defer { invalidatedFrames.removeAll() }
        return RestoredFrames(owned: Set(owned.map { UInt64($0 * Self.pageSize) }), copies: copies, invalidated: invalidatedFrames)
    }

    /// `frames` (guest-physical, any order, repeats allowed) as sorted runs of adjacent frames.
    private func runs(of frames: [UInt64]) -> [(start: UInt64, end: UInt64)] {
        var runs: [(start: UInt64, end: UInt64)] = []
        for frame in frames.sorted() {
            guard frame < UInt64(size) else { preconditionFailure("frame \(frame) is outside guest memory") }
            if let last = runs.last, frame <= last.end {
                runs[runs.count - 1].end = max(last.end, frame + UInt64(Self.pageSize))
            } else {
                runs.append((frame, frame + UInt64(Self.pageSize)))
            }
        }
        return runs
    }

    /// Linux's MADV_POPULATE_WRITE (5.14), which the C library's headers here may not name.
    private static let populateWrite: Int32 = 23

    /// Gives this memory its own copy of each of `frames` now, as a write would, with the
    /// contents unchanged (MADV_POPULATE_WRITE): a later write by the engine or the guest then
    /// lands in place, and KVM keeps its translations.
    func populateForWrite(frames: [UInt64]) throws(SystemError) {
        for (start, end) in runs(of: frames) {
            guard madvise(mapping.base.advanced(by: Int(start)), Int(end - start), Self.populateWrite) == 0 else {
                throw SystemError(call: "madvise(guest frames \(start)..<\(end), MADV_POPULATE_WRITE)", errno: errno)
            }
        }
    }

    /// Makes KVM drop every shadow translation to `frames`, whose guest mappings the engine
    /// removed or changed. The engine writes the guest's page tables from the host, behind
    /// the shadow MMU's back, and neither a CR3 reload nor a TLB flush makes PVM drop what it
    /// cached (measured); but a change of the host mapping of a frame does, through KVM's MMU
    /// notifier. So each run of frames is made read-only and writable again: contents and
    /// host pages stay, and the guest's next touch of them walks its page tables afresh.
    func invalidateTranslations(ofFrames frames: [UInt64]) throws(SystemError) {
        if origin != nil { invalidatedFrames.formUnion(frames) }
        for (start, end) in runs(of: frames) {
            let address = mapping.base.advanced(by: Int(start))
            let length = Int(end - start)
            guard mprotect(address, length, PROT_READ) == 0 else {
                throw SystemError(call: "mprotect(guest frames \(start)+\(length), PROT_READ)", errno: errno)
            }
            guard mprotect(address, length, PROT_READ | PROT_WRITE) == 0 else {
                throw SystemError(call: "mprotect(guest frames \(start)+\(length), PROT_READ|PROT_WRITE)", errno: errno)
            }
        }
    }

    /// Where this memory is mapped in the engine.
    public var hostAddress: UInt { UInt(bitPattern: mapping.base) }

    /// Bytes the kernel holds for this memory's memfd (its allocated blocks): a frozen
    /// parent's whole memory, whether or not its own mapping has the pages mapped.
    public var memfdBytes: Int? {
        var info = stat()
        guard fstat(memfd.rawValue, &info) == 0 else { return nil }
        return Int(info.st_blocks) * 512
    }

    /// The kernel's accounting of this memory's pages now (its mapping lives as long as this
    /// value, so the page map read is of this memory alone).
    public func usage(in pageMap: PageMap) throws(SystemError) -> MappingUsage {
        try pageMap.usage(of: hostAddress, length: size)
    }

    /// The engine's pointer to guest-physical `address`, valid for `length` bytes, or nil
    /// when any part of that range is outside guest memory.
    @inline(__always)
    public func pointer(physical address: UInt64, length: Int) -> UnsafeMutableRawPointer? {
        guard length >= 0, address <= UInt64(size), UInt64(length) <= UInt64(size) - address else { return nil }
        return mapping.base.advanced(by: Int(address))
    }

    /// Frames still available to the guest.
    public var freeFrameCount: Int {
        (size - Int(bumpFrame)) / Self.pageSize + freeFrames.count
    }

    /// Takes one zeroed frame, or nil when the VM is at its memory limit.
    func allocateFrame() -> UInt64? {
        if let frame = freeFrames.popLast() {
            if origin != nil { reusedFreeFrames.insert(frame) }
            mapping.base.advanced(by: Int(frame)).initializeMemory(as: UInt8.self, repeating: 0, count: Self.pageSize)
            return frame
        }
        guard bumpFrame + UInt64(Self.pageSize) <= UInt64(size) else { return nil }
        defer {
            bumpFrame += UInt64(Self.pageSize)
            highWaterFrame = max(highWaterFrame, bumpFrame)
        }
        return bumpFrame
    }

    func freeFrame(_ frame: UInt64) {
        freeFrames.append(frame)
    }

    /// Copies `count` bytes at guest-physical `address` into a new array (for tests and dumps).
    public func bytes(physical address: UInt64, count: Int) -> [UInt8]? {
        guard let source = pointer(physical: address, length: count) else { return nil }
        return Array(UnsafeRawBufferPointer(start: source, count: count))
    }
}
