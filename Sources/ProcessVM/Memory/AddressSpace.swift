import HostSystem

/// The guest program's virtual address space: page tables plus the engine's record of which
/// ranges are mapped, for brk, mmap, munmap and mprotect, and the one checked path by which
/// the engine reads or writes guest memory on the program's behalf.
final class AddressSpace {
    static let pageSize = UInt64(GuestMemory.pageSize)
    /// Lowest user address: below it lie the engine's system pages (GDT, IDT, TSS, stubs,
    /// mailbox), which no program mapping may cover. Linux's default mmap_min_addr.
    static let userBottom: UInt64 = 0x10000
    /// Highest user address + 1 (the canonical lower half, less a guard page, as on Linux).
    static let userTop: UInt64 = 0x7FFF_FFFF_F000
    /// mmap hands out addresses below this, top-down.
    static let mmapTop: UInt64 = 0x7FFF_F000_0000

    let memory: GuestMemory
    let tables: PageTables
    /// Mapped ranges, sorted, never overlapping: start -> end (exclusive).
    private(set) var regions: [(start: UInt64, end: UInt64)] = []
    var heapStart: UInt64 = 0
    var heapEnd: UInt64 = 0
    /// Frames whose mappings were removed, moved or changed since the guest's translations
    /// were last dropped: KVM may still hold translations of them, which must go before the
    /// guest runs on (see `dropStaleTranslations`).
    private(set) var retiredFrames: [UInt64] = []
    /// Frames unmapped since then: quarantined, never handed out again (as a page table, or
    /// to another mapping) while a translation to them may survive. The guest can run while
    /// the poller serves a call it posted itself, so "before it runs on" is not enough.
    private var quarantinedFrames: [UInt64] = []

    init(memory: GuestMemory) throws(GuestError) {
        self.memory = memory
        tables = try PageTables(memory: memory)
    }

    /// A fork child's copy: same tables (inside the copied memory), same bookkeeping.
    init(copyOf parent: AddressSpace, memory: GuestMemory) {
        self.memory = memory
        tables = PageTables(memory: memory, root: parent.tables.root)
        regions = parent.regions
        heapStart = parent.heapStart
        heapEnd = parent.heapEnd
    }

    /// Makes KVM drop its translations of every retired frame, then frees the quarantined
    /// ones. Called after every system call that changed mappings, before the guest goes on
    /// (exit path) or is answered (poller), and by a fork point before it is frozen.
    func dropStaleTranslations() throws(SystemError) {
        guard !retiredFrames.isEmpty else { return }
        try memory.invalidateTranslations(ofFrames: retiredFrames)
        retiredFrames.removeAll(keepingCapacity: true)
        for frame in quarantinedFrames { memory.freeFrame(frame) }
        quarantinedFrames.removeAll(keepingCapacity: true)
    }

    static func pageDown(_ value: UInt64) -> UInt64 { value & ~(pageSize - 1) }
    static func pageUp(_ value: UInt64) -> UInt64? {
        let (sum, overflow) = value.addingReportingOverflow(pageSize - 1)
        return overflow ? nil : sum & ~(pageSize - 1)
    }

    /// True when [start, start+length) lies inside the user range (and does not overflow).
    static func isUserRange(_ start: UInt64, _ length: UInt64) -> Bool {
        let (end, overflow) = start.addingReportingOverflow(length)
        return !overflow && start >= userBottom && end <= userTop
    }

    /// Maps fresh zeroed pages over [start, start+length), both page-aligned, inside the user
    /// range. Refused before any work when the VM has fewer free frames than pages asked.
    func mapAnonymous(at start: UInt64, length: UInt64, _ permissions: PagePermissions) throws(GuestError) {
        guard Self.isUserRange(start, length) else { throw .reservedRange(start) }
        guard length / Self.pageSize <= UInt64(memory.freeFrameCount) else { throw .outOfMemory }
        var page = start
        while page < start + length {
            guard let frame = memory.allocateFrame() else {
                unmap(start, length: page - start)
                throw .outOfMemory
            }
            try tables.map(page, to: frame, permissions)
            page += Self.pageSize
        }
        insertRegion(start, start + length)
    }

    /// Maps one page in the system area (outside the user range) at `virtual`.
    func mapSystemPage(at virtual: UInt64, _ permissions: PagePermissions) throws(GuestError) -> UInt64 {
        guard let frame = memory.allocateFrame() else { throw .outOfMemory }
        try tables.map(virtual, to: frame, permissions)
        return frame
    }

    /// The mapped parts of [start, end): the work of a call is bounded by what is mapped,
    /// never by the length asked (a munmap of 96 TiB walks only the pages that exist).
    private func mappedParts(_ start: UInt64, _ end: UInt64) -> [Range<UInt64>] {
        regions.compactMap { region in
            let low = max(region.start, start), high = min(region.end, end)
            return low < high ? low..<high : nil
        }
    }

    /// True when every page of [start, start+length) is mapped (accessible or not).
    func isFullyMapped(_ start: UInt64, _ length: UInt64) -> Bool {
        let (end, overflow) = start.addingReportingOverflow(length)
        guard !overflow else { return false }
        // Regions are sorted and never overlap; no array is made (mprotect is on the fork path).
        var covered = start
        for region in regions where region.end > start && region.start < end {
            guard region.start <= covered else { return false }
            covered = max(covered, min(region.end, end))
        }
        return covered >= end
    }

    /// Unmaps whatever is mapped in [start, start+length). The frames are quarantined until
    /// KVM's translations of them are dropped (`dropStaleTranslations`).
    func unmap(_ start: UInt64, length: UInt64) {
        let (end, overflow) = start.addingReportingOverflow(length)
        let parts = mappedParts(start, overflow ? UInt64.max : end)
        for part in parts {
            for page in stride(from: part.lowerBound, to: part.upperBound, by: Int(Self.pageSize)) {
                if let frame = tables.unmap(page) {
                    quarantinedFrames.append(frame)
                    retiredFrames.append(frame)
                }
            }
            removeRegion(part.lowerBound, part.upperBound)
        }
    }

    /// Changes permissions of [start, start+length); false if any page there is unmapped.
    func protect(_ start: UInt64, length: UInt64, _ permissions: PagePermissions) -> Bool {
        guard isFullyMapped(start, length) else { return false }
        for page in stride(from: start, to: start + length, by: Int(Self.pageSize)) {
            if let frame = tables.protect(page, permissions) { retiredFrames.append(frame) }
        }
        return true
    }

    /// Moves the frames of [start, start+length), which must be mapped, to the free range
    /// [destination, destination+length), keeping their contents and permissions (mremap
    /// without copying).
    func move(_ start: UInt64, length: UInt64, to destination: UInt64) throws(GuestError) {
        guard isFullyMapped(start, length), Self.isUserRange(destination, length) else { throw .reservedRange(destination) }
        var offset: UInt64 = 0
        while offset < length {
            // A PROT_NONE page moves too (it has a frame, but no translation to copy from).
            let permissions = tables.translate(start + offset)?.permissions ?? [.user]
            if let frame = tables.unmap(start + offset) {
                try tables.map(destination + offset, to: frame, permissions)
                retiredFrames.append(frame)
            }
            offset += Self.pageSize
        }
        removeRegion(start, start + length)
        insertRegion(destination, destination + length)
    }

    /// The permissions of the page at `virtual`, or nil when it is unmapped or PROT_NONE.
    func permissions(at virtual: UInt64) -> PagePermissions? {
        tables.translate(Self.pageDown(virtual))?.permissions
    }

    /// True when no page of [start, end) is mapped.
    func isFree(_ start: UInt64, _ end: UInt64) -> Bool {
        !regions.contains { $0.start < end && start < $0.end }
    }

    /// The highest free range of `length` bytes below the mmap top, as Linux places mmaps.
    func findFree(length: UInt64) -> UInt64? {
        var candidateEnd = Self.mmapTop
        for region in regions.reversed() where region.start < candidateEnd {
            if region.end <= candidateEnd, candidateEnd - region.end >= length { break }
            candidateEnd = min(candidateEnd, region.start)
        }
        guard candidateEnd >= length, candidateEnd - length >= heapEnd + (1 << 30) else { return nil }
        return candidateEnd - length
    }

    private func insertRegion(_ start: UInt64, _ end: UInt64) {
        removeRegion(start, end)
        let index = regions.firstIndex { $0.start > start } ?? regions.endIndex
        regions.insert((start, end), at: index)
        // Merge with neighbours that touch.
        var merged: [(start: UInt64, end: UInt64)] = []
        for region in regions {
            if let last = merged.last, last.end == region.start {
                merged[merged.count - 1].end = region.end
            } else {
                merged.append(region)
            }
        }
        regions = merged
    }

    private func removeRegion(_ start: UInt64, _ end: UInt64) {
        var kept: [(start: UInt64, end: UInt64)] = []
        for region in regions {
            if region.end <= start || region.start >= end {
                kept.append(region)
                continue
            }
            if region.start < start { kept.append((region.start, start)) }
            if region.end > end { kept.append((end, region.end)) }
        }
        regions = kept
    }

    // MARK: Checked access to guest memory

    /// Runs `body` on the engine's view of guest range [address, address+length), which the
    /// guest program must be allowed to read (and write, with `writable`). The view is the
    /// guest memory itself when its frames are contiguous, else a bounce buffer copied in
    /// (and back out for writes). Returns nil — the guest's EFAULT — for any bad page.
    func withUserBuffer<T>(_ address: UInt64, _ length: Int, writable: Bool, _ body: (UnsafeMutableRawBufferPointer) -> T) -> T? {
        guard length >= 0 else { return nil }
        if length == 0 { return body(UnsafeMutableRawBufferPointer(start: nil, count: 0)) }
        let (end, overflow) = address.addingReportingOverflow(UInt64(length))
        guard !overflow, end <= Self.userTop else { return nil }
        var required: PagePermissions = [.user, .read]
        if writable { required.insert(.write) }
        // Check every page and see whether the frames are contiguous.
        var page = Self.pageDown(address)
        var firstPhysical: UInt64 = 0
        var contiguous = true
        var expected: UInt64 = 0
        while page < end {
            guard let (frame, permissions) = tables.translate(page), permissions.isSuperset(of: required) else { return nil }
            if page == Self.pageDown(address) {
                firstPhysical = frame + (address - page)
                expected = frame
            } else if frame != expected {
                contiguous = false
            }
            expected += Self.pageSize
            page += Self.pageSize
        }
        if contiguous, let pointer = memory.pointer(physical: firstPhysical, length: length) {
            return body(UnsafeMutableRawBufferPointer(start: pointer, count: length))
        }
        // Callers pass guest-chosen lengths in pieces (`ProcessVM.transfer`): engine memory per call stays bounded.
        assert(length <= Self.bounceLimit, "a bounce buffer of \(length) bytes")
        let bounce = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 16)
        defer { bounce.deallocate() }
        copyPages(address, length, bounce.baseAddress!, toGuest: false)
        let result = body(bounce)
        if writable { copyPages(address, length, bounce.baseAddress!, toGuest: true) }
        return result
    }

    /// Copies between a host buffer and already-validated guest pages, page by page. (Only
    /// the engine writes page tables, under the VM's lock, so the walk finds what the check
    /// found; a page it cannot find is skipped rather than trusted.)
    private func copyPages(_ address: UInt64, _ length: Int, _ host: UnsafeMutableRawPointer, toGuest: Bool) {
        walkPieces(address, length) { done, guest, chunk in
            guard let guest else { return false }
            if toGuest { guest.copyMemory(from: host + done, byteCount: chunk) } else { (host + done).copyMemory(from: guest, byteCount: chunk) }
            return true
        }
    }

    /// Walks [address, address + length) a page at a time through the page tables, whatever
    /// the program's permissions: `body` gets each piece's offset in the range, the engine's
    /// pointer to it (nil where no page is mapped, or its frame is outside guest memory) and
    /// its length, and returns false to stop.
    private func walkPieces(_ address: UInt64, _ length: Int, _ body: (_ done: Int, _ guest: UnsafeMutableRawPointer?, _ chunk: Int) -> Bool) {
        var done = 0
        while done < length {
            let virtual = address + UInt64(done)
            let offset = Int(virtual & (Self.pageSize - 1))
            let chunk = min(length - done, Int(Self.pageSize) - offset)
            let guest = tables.translate(Self.pageDown(virtual)).flatMap { memory.pointer(physical: $0.frame + UInt64(offset), length: chunk) }
            guard body(done, guest, chunk) else { return }
            done += chunk
        }
    }

    /// Reads guest bytes; nil if the program could not read them itself.
    func read(_ address: UInt64, count: Int) -> [UInt8]? {
        withUserBuffer(address, count, writable: false) { Array($0) }
    }

    /// Writes guest bytes; false if the program could not write them itself.
    @discardableResult
    func write(_ address: UInt64, _ bytes: some Collection<UInt8>) -> Bool {
        withUserBuffer(address, bytes.count, writable: true) { buffer in
            _ = buffer.initializeMemory(as: UInt8.self, from: bytes)
        } != nil
    }

    func readValue<T: FixedWidthInteger>(_ address: UInt64, as: T.Type = T.self) -> T? {
        withUserBuffer(address, MemoryLayout<T>.size, writable: false) { $0.loadUnaligned(as: T.self) }
    }

    enum CStringRead {
        case string([UInt8])
        case badAddress
        case tooLong
    }

    /// Reads a NUL-terminated string of at most `limit` bytes (without the NUL).
    func readCString(_ address: UInt64, limit: Int = 4096) -> CStringRead {
        var result: [UInt8] = []
        var cursor = address
        while result.count < limit {
            let pageLeft = Int(Self.pageSize - (cursor & (Self.pageSize - 1)))
            let chunk = min(pageLeft, limit - result.count)
            guard let bytes = read(cursor, count: chunk) else { return .badAddress }
            if let nul = bytes.firstIndex(of: 0) {
                result.append(contentsOf: bytes[..<nul])
                return .string(result)
            }
            result.append(contentsOf: bytes)
            cursor += UInt64(chunk)
        }
        return .tooLong
    }

    /// Copies guest bytes into `target` through page tables regardless of the program's
    /// permissions: for the loader, which reads back the code it loaded (execute-only pages
    /// included). Unmapped pages read as zeros.
    func loaderCopy(_ address: UInt64, count: Int, into target: UnsafeMutableRawPointer) {
        walkPieces(address, count) { done, guest, chunk in
            if let guest { (target + done).copyMemory(from: guest, byteCount: chunk) } else { (target + done).initializeMemory(as: UInt8.self, repeating: 0, count: chunk) }
            return true
        }
    }

    /// Writes through page tables regardless of the program's permissions: for the loader,
    /// which fills read-only segments before the program starts.
    func loaderWrite(_ address: UInt64, _ bytes: UnsafeRawBufferPointer) {
        walkPieces(address, bytes.count) { done, guest, chunk in
            guard let guest else { return false }
            guest.copyMemory(from: bytes.baseAddress! + done, byteCount: chunk)
            return true
        }
    }
}
