/// Permissions of one guest page, as the x86-64 page-table entry encodes them.
public struct PagePermissions: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let read = PagePermissions(rawValue: 1)
    public static let write = PagePermissions(rawValue: 2)
    public static let execute = PagePermissions(rawValue: 4)
    /// Reachable from the guest program (CPL3); system tables leave it out.
    public static let user = PagePermissions(rawValue: 8)

    /// From mmap/mprotect PROT_* bits.
    public init(prot: Int32) {
        var value: PagePermissions = [.user]
        if prot & 1 != 0 { value.insert(.read) }
        if prot & 2 != 0 { value.insert([.read, .write]) }
        if prot & 4 != 0 { value.insert([.read, .execute]) }
        self = value
    }
}

/// The guest's 4-level page tables, built by the engine in guest-physical memory. The
/// tables themselves are never mapped in the guest's virtual address space, so the program
/// cannot see or change them.
final class PageTables {
    private static let present: UInt64 = 1
    private static let writable: UInt64 = 1 << 1
    private static let userBit: UInt64 = 1 << 2
    /// Accessed and dirty, set from the start: the shadow MMU then has no bits to set on
    /// the guest's behalf, grants write access on the first touch, and maps neighbouring
    /// pages along with a faulting one (it prefetches only entries already accessed).
    private static let accessedDirty: UInt64 = 1 << 5 | 1 << 6
    private static let noExecute: UInt64 = 1 << 63
    private static let addressMask: UInt64 = 0x000F_FFFF_FFFF_F000

    let memory: GuestMemory
    /// Guest-physical address of the top-level table (CR3).
    let root: UInt64

    init(memory: GuestMemory) throws(GuestError) {
        self.memory = memory
        guard let frame = memory.allocateFrame() else { throw .outOfMemory }
        root = frame
    }

    /// Adopts tables that already exist in `memory` (a fork child's copy of its parent's).
    init(memory: GuestMemory, root: UInt64) {
        self.memory = memory
        self.root = root
    }

    /// The entry `index` of the table at guest-physical `table`, or nil when the table is not
    /// inside guest memory. Only the engine writes these tables (they are never mapped in the
    /// guest's address space, and a frame is never reused while a guest translation to it
    /// may survive), so a table outside memory means a broken invariant: the walk treats it
    /// as unmapped rather than trusting it.
    @inline(__always)
    private func entry(_ table: UInt64, _ index: Int) -> UnsafeMutablePointer<UInt64>? {
        // unsafe: `pointer` checked the 8 bytes lie in guest memory; a table is a page-aligned frame, so entry index * 8 is UInt64-aligned.
        memory.pointer(physical: table + UInt64(index * 8), length: 8)?.assumingMemoryBound(to: UInt64.self)
    }

    @inline(__always)
    private static func indices(_ virtual: UInt64) -> (Int, Int, Int, Int) {
        (Int((virtual >> 39) & 511), Int((virtual >> 30) & 511), Int((virtual >> 21) & 511), Int((virtual >> 12) & 511))
    }

    /// The leaf entry for `virtual`, creating intermediate tables when `create` is set.
    private func leaf(_ virtual: UInt64, create: Bool) throws(GuestError) -> UnsafeMutablePointer<UInt64>? {
        let (i4, i3, i2, i1) = Self.indices(virtual)
        var table = root
        for index in [i4, i3, i2] {
            guard let slot = entry(table, index) else { return nil }
            if slot.pointee & Self.present == 0 {
                guard create else { return nil }
                guard let frame = memory.allocateFrame() else { throw .outOfMemory }
                // Intermediate levels allow everything; the leaf decides.
                slot.pointee = frame | Self.present | Self.writable | Self.userBit | Self.accessedDirty
            }
            table = slot.pointee & Self.addressMask
        }
        return entry(table, i1)
    }

    /// Maps the page at `virtual` to `frame` with `permissions`.
    func map(_ virtual: UInt64, to frame: UInt64, _ permissions: PagePermissions) throws(GuestError) {
        guard let slot = try leaf(virtual, create: true) else { throw .reservedRange(virtual) }
        slot.pointee = frame | Self.bits(permissions)
    }

    /// True when a frame is mapped at `virtual`, accessible or not (PROT_NONE).
    func isMapped(_ virtual: UInt64) -> Bool {
        guard let slot = try? leaf(virtual, create: false) else { return false }
        return slot.pointee & Self.addressMask != 0
    }

    /// Removes the mapping at `virtual` and returns the frame it pointed to.
    func unmap(_ virtual: UInt64) -> UInt64? {
        guard let slot = try? leaf(virtual, create: false), slot.pointee & Self.addressMask != 0 else { return nil }
        let frame = slot.pointee & Self.addressMask
        slot.pointee = 0
        return frame
    }

    /// Changes the permissions of a mapped page; returns its frame, or nil when nothing is
    /// mapped there.
    func protect(_ virtual: UInt64, _ permissions: PagePermissions) -> UInt64? {
        guard let slot = try? leaf(virtual, create: false), slot.pointee & Self.addressMask != 0 else { return nil }
        let frame = slot.pointee & Self.addressMask
        slot.pointee = frame | Self.bits(permissions)
        return frame
    }

    /// The frame and permissions behind `virtual`, as the guest's MMU would see them.
    func translate(_ virtual: UInt64) -> (frame: UInt64, permissions: PagePermissions)? {
        guard let slot = try? leaf(virtual, create: false) else { return nil }
        let value = slot.pointee
        guard value & Self.present != 0, memory.pointer(physical: value & Self.addressMask, length: GuestMemory.pageSize) != nil else {
            return nil
        }
        var permissions: PagePermissions = [.read]
        if value & Self.writable != 0 { permissions.insert(.write) }
        if value & Self.noExecute == 0 { permissions.insert(.execute) }
        if value & Self.userBit != 0 { permissions.insert(.user) }
        return (value & Self.addressMask, permissions)
    }

    private static func bits(_ permissions: PagePermissions) -> UInt64 {
        // A PROT_NONE page keeps its frame address in the entry (frame 0 is never handed
        // out, so a non-zero address means "mapped") but is not present to the guest.
        guard !permissions.isDisjoint(with: [.read, .write, .execute]) else { return 0 }
        var bits = present | accessedDirty
        if permissions.contains(.write) { bits |= writable }
        if permissions.contains(.user) { bits |= userBit }
        if !permissions.contains(.execute) { bits |= noExecute }
        return bits
    }
}
