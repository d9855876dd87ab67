import CShims
import HostSystem
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

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
public final class GuestMemory: @unchecked Sendable {
    public static let pageSize = 4096
    public let size: Int
    /// The memfd that backs this memory (the parent's, for a fork child).
    public let memfd: FileDescriptor
    let mapping: MappedMemory
    /// Next never-used frame; frames above it have never been written and read as zero.
    private(set) var bumpFrame: UInt64
    /// Frames given back by munmap, re-zeroed before reuse.
    private var freeFrames: [UInt64] = []
    /// Byte ranges of this memory mapped from a file rather than the memfd.
    private let fileBackedRanges = Mutex<[Range<Int>]>([])

    /// Creates fresh zeroed memory of `size` bytes (a multiple of the page size).
    public init(size: Int) throws(SystemError) {
        precondition(size % Self.pageSize == 0 && size > 0, "guest memory size must be whole pages")
        self.size = size
        memfd = try makeMemfd(name: "vmfork-guest", size: size)
        mapping = try MappedMemory(length: size, flags: MAP_SHARED, fd: memfd.rawValue)
        bumpFrame = UInt64(Self.pageSize) // frame 0 stays unused so that physical 0 is never valid
    }

    /// Maps a parent's memory copy-on-write: reads see the parent's bytes, writes are private
    /// to this child and never reach the parent's memfd.
    ///
    /// Only the parent's data is mapped from its memfd: every hole (pages the parent never
    /// wrote, which read as zero) is mapped anonymous instead. A child touching such a page
    /// then gets a fresh zero page, without allocating one in the parent's memfd (which would
    /// grow the parent with every child's reads) and without a copy on write.
    public init(copyOnWriteOf parent: GuestMemory) throws(SystemError) {
        try parent.gatherFileBackedRanges()
        size = parent.size
        let fd = try retryingSyscall("fcntl(parent memfd, F_DUPFD_CLOEXEC)") { fcntl(parent.memfd.rawValue, F_DUPFD_CLOEXEC, 0) }
        memfd = FileDescriptor(adopting: fd)
        mapping = try MappedMemory(length: size, flags: MAP_PRIVATE, fd: fd)
        bumpFrame = parent.bumpFrame
        freeFrames = parent.freeFrames
        for hole in try Self.holes(of: fd, size: size) {
            let target = mapping.base.advanced(by: hole.lowerBound)
            guard mmap(target, hole.count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == target else {
                throw SystemError(call: "mmap(anonymous hole of \(hole.count) bytes)", errno: errno)
            }
        }
    }

    /// Maps `length` bytes of `file` from `offset` privately over guest-physical `physical`
    /// (all page-aligned): the guest reads the page cache, and a write — by the guest after
    /// an mprotect, or by the engine reusing the frame — copies the page for this VM alone.
    /// The file must not shrink while mapped (as Linux forbids for a running executable):
    /// touching a page past its end would raise SIGBUS.
    func mapFile(_ file: Int32, offset: Int, physical: UInt64, length: Int) throws(SystemError) {
        precondition(offset % Self.pageSize == 0 && physical % UInt64(Self.pageSize) == 0 && length % Self.pageSize == 0)
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

    /// The byte ranges of `fd` that hold no data (SEEK_HOLE/SEEK_DATA), page-aligned.
    private static func holes(of fd: Int32, size: Int) throws(SystemError) -> [Range<Int>] {
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
            let start = (Int(holeStart) + pageSize - 1) & ~(pageSize - 1)
            let end = min(size, Int(dataStart)) & ~(pageSize - 1)
            if start < end { holes.append(start..<end) }
            offset = Int(dataStart)
        }
        return holes
    }

    /// Where this memory is mapped in the engine, to find it in /proc/self/smaps.
    public var hostAddress: UInt { UInt(bitPattern: mapping.base) }

    /// The kernel's accounting of this memory's mappings in `mappings`.
    public func usage(in mappings: MemoryMappings) -> MappingUsage? {
        mappings.usage(of: hostAddress, length: size)
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
            mapping.base.advanced(by: Int(frame)).initializeMemory(as: UInt8.self, repeating: 0, count: Self.pageSize)
            return frame
        }
        guard bumpFrame + UInt64(Self.pageSize) <= UInt64(size) else { return nil }
        defer { bumpFrame += UInt64(Self.pageSize) }
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
