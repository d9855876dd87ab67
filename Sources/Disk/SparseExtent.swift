import IOEngine
import Synchronization

/// Where a stretch of an extent's address space reads from.
enum GrainMapping {
    /// Plain data at a byte offset of a host file.
    case data(file: HostFile, offset: UInt64)
    /// Reads as zeros and hides whatever the parent holds there.
    case zero
    /// Not in this disk: look in the parent.
    case unallocated
    /// A deflated streamOptimized grain.
    case compressed(extent: SparseExtent, grain: Int, offsetInGrain: Int)
}

/// A hosted sparse extent: a header, a grain directory pointing at grain tables, and grains.
/// Grain tables are read on first use and cached; allocation appends a grain at the end of
/// the file and is crash-consistent (grain first, then both tables, then a flush).
///
/// `@unchecked Sendable`: `file`, `header` and the directories are `let`s; the cached tables, the next free sector
/// and the deferred writes are in `state` (a Mutex), and allocations are serialised by `allocationLock`.
final class SparseExtent: @unchecked Sendable {
    /// In-file `grain table entry` values with a meaning other than "sector offset".
    static let unallocatedEntry: UInt32 = 0
    static let zeroedEntry: UInt32 = 1
    /// Above this many grain tables a directory is refused as hostile (64 MiB of directory).
    static let maximumGrainTables = 1 << 24
    static let embeddedDescriptorSectors: UInt64 = 20

    let file: HostFile
    /// The header that describes the layout (for streamOptimized disks, the footer's copy).
    let header: SparseExtentHeader
    let directory: [UInt32]
    let redundantDirectory: [UInt32]?
    /// Serializes allocations, which must see each other's table updates.
    let allocationLock = AsyncLock()

    private struct State {
        var tables: [Int: [UInt32]] = [:]
        var nextFreeSector: UInt64
        /// Whether each grain allocation is flushed before it returns (see `deferAllocationSyncs`).
        var syncsEachAllocation = true
        /// Deferred: grains allocated (in `tables`) but not yet written, by grain, with the
        /// file sector and the whole grain's contents.
        var pendingGrains: [Int: (sector: UInt64, contents: IOBuffer)] = [:]
        /// Deferred: the table sectors changed since they were last written.
        var dirtyTableSectors: Set<TableSector> = []
    }

    /// One 512-byte sector (128 entries) of a grain table.
    struct TableSector: Hashable {
        let table: Int
        let sector: Int
    }

    /// Deferred grains are written in batches of this many (4 MiB of 64 KiB grains).
    static let deferredGrainBatch = 64

    private let state: Mutex<State>

    var isCompressed: Bool { header.flags.contains(.compressedGrains) }
    var grainBytes: UInt64 { header.grainBytes }
    var capacityBytes: UInt64 { header.capacitySectors * 512 }
    private var zeroedGrainsAllowed: Bool { header.flags.contains(.zeroedGrains) }

    private init(file: HostFile, header: SparseExtentHeader, directory: [UInt32], redundantDirectory: [UInt32]?, fileSectors: UInt64) {
        self.file = file
        self.header = header
        self.directory = directory
        self.redundantDirectory = redundantDirectory
        state = Mutex(State(nextFreeSector: max(fileSectors, header.overheadSectors)))
    }

    /// Opens the extent in `file`, checking its header and grain directories against the file.
    static func open(_ file: HostFile) async throws(DiskError) -> SparseExtent {
        var header = try SparseExtentHeader.parse(try await file.readExactly(count: 512, at: 0, structure: "header"), file: file.path)
        let fileBytes = try file.size()
        let fileSectors = (fileBytes + 511) / 512
        if header.directoryOffset == SparseExtentHeader.directoryAtEnd {
            header = try await StreamOptimizedFooter.read(file, header: header, fileBytes: fileBytes)
        }
        if header.flags.contains(.compressedGrains) && file.writable {
            throw .readOnly(file: file.path, reason: "streamOptimized (compressed) extents are read-only; convert the disk to write it")
        }
        let directory = try await readDirectory(file, header: header, at: header.directoryOffset, name: "grain directory", fileSectors: fileSectors)
        var redundant: [UInt32]?
        if header.flags.contains(.redundantGrainTable) && !header.flags.contains(.compressedGrains) {
            redundant = try await readDirectory(file, header: header, at: header.redundantDirectoryOffset, name: "redundant grain directory", fileSectors: fileSectors)
        }
        return SparseExtent(file: file, header: header, directory: directory, redundantDirectory: redundant, fileSectors: fileSectors)
    }

    private static func readDirectory(_ file: HostFile, header: SparseExtentHeader, at sector: UInt64, name: String, fileSectors: UInt64) async throws(DiskError) -> [UInt32] {
        let count = header.grainTableCount
        guard count <= maximumGrainTables else {
            throw .malformed(file: file.path, field: "header.capacity", problem: "needs \(count) grain tables, more than \(maximumGrainTables)")
        }
        guard sector + header.grainDirectorySectors <= fileSectors else {
            throw .malformed(file: file.path, field: name, problem: "its \(header.grainDirectorySectors) sectors at sector \(sector) run past the end of the file (\(fileSectors) sectors)")
        }
        let bytes = try await file.readExactly(count: count * 4, at: sector * 512, structure: name)
        let entries = decodeEntries(bytes)
        for (index, entry) in entries.enumerated() where entry != 0 {
            guard UInt64(entry) + header.grainTableSectors <= fileSectors else {
                throw .malformed(file: file.path, field: "\(name) entry \(index)", problem: "grain table at sector \(entry) runs past the end of the file (\(fileSectors) sectors)")
            }
        }
        // Tables that share sectors would each be cached whole (millions of copies of one
        // table in a small file) and a write to one would change the others' grains.
        let placed = entries.indices.filter { entries[$0] != 0 }.sorted { entries[$0] < entries[$1] }
        for (previous, next) in zip(placed, placed.dropFirst()) where UInt64(entries[previous]) + header.grainTableSectors > UInt64(entries[next]) {
            throw .malformed(file: file.path, field: "\(name) entry \(next)", problem: "grain table at sector \(entries[next]) overlaps the table of entry \(previous) at sector \(entries[previous])")
        }
        return entries
    }

    static func decodeEntries(_ bytes: [UInt8]) -> [UInt32] {
        (0..<bytes.count / 4).map { index in
            UInt32(bytes[index * 4]) | UInt32(bytes[index * 4 + 1]) << 8 | UInt32(bytes[index * 4 + 2]) << 16 | UInt32(bytes[index * 4 + 3]) << 24
        }
    }

    static func encodeEntries<C: Collection>(_ entries: C) -> [UInt8] where C.Element == UInt32 {
        var bytes = [UInt8](repeating: 0, count: entries.count * 4)
        for (index, entry) in entries.enumerated() { bytes.storeLittleEndian(entry, at: index * 4) }
        return bytes
    }

    /// The grain table `index`, read and checked on first use; nil when the directory has no
    /// table there (every grain it would cover is unallocated).
    nonisolated(nonsending) func grainTable(_ index: Int) async throws(DiskError) -> [UInt32]? {
        if let cached = state.withLock({ $0.tables[index] }) { return cached }
        let sector = directory[index]
        if sector == 0 { return nil }
        let count = Int(header.entriesPerGrainTable)
        let entries = SparseExtent.decodeEntries(try await file.readExactly(count: count * 4, at: UInt64(sector) * 512, structure: "grain table \(index)"))
        let limit = state.withLock { $0.nextFreeSector }
        for (position, entry) in entries.enumerated() where entry != SparseExtent.unallocatedEntry {
            if entry == SparseExtent.zeroedEntry && zeroedGrainsAllowed { continue }
            guard UInt64(entry) >= 1, UInt64(entry) < limit else {
                throw .malformed(file: file.path, field: "grain table \(index) entry \(position)", problem: "grain at sector \(entry) lies outside the file (\(limit) sectors)")
            }
        }
        return state.withLock { state in
            if let raced = state.tables[index] { return raced }
            state.tables[index] = entries
            return entries
        }
    }

    /// The in-file entry for `grain`: a sector, or 0 (unallocated) or 1 (zeroed).
    nonisolated(nonsending) func entry(forGrain grain: Int) async throws(DiskError) -> UInt32 {
        let perTable = Int(header.entriesPerGrainTable)
        guard let table = try await grainTable(grain / perTable) else { return SparseExtent.unallocatedEntry }
        return table[grain % perTable]
    }

    /// Where `offset` (bytes into this extent) reads from, and for how many of at most `limit`
    /// bytes that holds (up to the end of its grain).
    nonisolated(nonsending) func map(_ offset: UInt64, limit: UInt64) async throws(DiskError) -> (GrainMapping, UInt64) {
        let grain = Int(offset / grainBytes)
        let offsetInGrain = offset % grainBytes
        let length = min(limit, grainBytes - offsetInGrain)
        // A deferred grain is written before anything reads or rewrites it in the file.
        if state.withLock({ $0.pendingGrains[grain] != nil }) { try await writePendingGrains() }
        let entry = try await entry(forGrain: grain)
        if entry == SparseExtent.unallocatedEntry { return (.unallocated, length) }
        if entry == SparseExtent.zeroedEntry && zeroedGrainsAllowed { return (.zero, length) }
        if isCompressed { return (.compressed(extent: self, grain: grain, offsetInGrain: Int(offsetInGrain)), length) }
        return (.data(file: file, offset: UInt64(entry) * 512 + offsetInGrain), length)
    }

    /// From now on grain allocations are neither written nor flushed one by one: new grains
    /// are written in batches (before anything reads or rewrites them) and the changed table
    /// sectors once, by `writeDeferred` (which `VirtualDisk.flush` calls). For a disk written
    /// whole by one task that flushes once at its end and records it complete only after that
    /// (an image's layer disk), where a crash means writing it again.
    func deferAllocationSyncs() { state.withLock { $0.syncsEachAllocation = false } }

    /// False once `deferAllocationSyncs` was called: the disk's writer flushes at its end.
    var syncsEachAllocation: Bool { state.withLock { $0.syncsEachAllocation } }

    /// Writes the grains allocated but not yet written, in one batch. The deferred mode's one
    /// task is the only caller of `map` and `allocate`, so none reads a grain taken here before
    /// its write completes.
    nonisolated(nonsending) func writePendingGrains() async throws(DiskError) {
        let pending = state.withLock { state in
            let taken = state.pendingGrains
            state.pendingGrains = [:]
            return taken
        }
        if pending.isEmpty { return }
        // unsafe: each grain's buffer lives in `pending`, kept alive past the submission below.
        let requests = pending.values.map { IORequest.write(file.registered, from: UnsafeRawBufferPointer($0.contents.bytes), at: $0.sector * 512) }
        do { _ = try await file.engine.submit(requests) } catch { throw .io(error) }
        withExtendedLifetime(pending) {}
    }

    /// Writes what deferred allocations left unwritten: their grains, then the changed sectors
    /// of the grain tables and the redundant tables. Nothing to do for an extent that syncs
    /// each allocation.
    nonisolated(nonsending) func writeDeferred() async throws(DiskError) {
        try await writePendingGrains()
        let (dirty, tables) = state.withLock { state in
            let dirty = state.dirtyTableSectors
            state.dirtyTableSectors = []
            return (dirty, state.tables)
        }
        if dirty.isEmpty { return }
        var requests: [IORequest] = []
        var buffers: [IOBuffer] = []
        for key in dirty {
            guard let table = tables[key.table] else { continue }
            let buffer = file.engine.makeBuffer(count: 512)
            buffer.bytes.copyBytes(from: try encodedTableSector(table, first: key.sector * 128))
            // unsafe: the sector's buffer is kept in `buffers` until the submission below ends.
            let bytes = UnsafeRawBufferPointer(buffer.bytes)
            requests.append(.write(file.registered, from: bytes, at: (UInt64(directory[key.table]) + UInt64(key.sector)) * 512))
            if let redundantDirectory, redundantDirectory[key.table] != 0 {
                requests.append(.write(file.registered, from: bytes, at: (UInt64(redundantDirectory[key.table]) + UInt64(key.sector)) * 512))
            }
            buffers.append(buffer)
        }
        do { _ = try await file.engine.submit(requests) } catch { throw .io(error) }
        withExtendedLifetime(buffers) {}
    }

    /// Appends `contents` (one whole grain) as the data of `grain`: the grain is written first,
    /// then its entry in the grain table and the redundant grain table, then everything is
    /// flushed. A crash before the tables are written leaves only unreferenced space at the
    /// end of the file, which `check` reports as a leak. Call with `allocationLock` held.
    /// After `deferAllocationSyncs` nothing is written yet (see there).
    func allocate(grain: Int, contents: IOBuffer) async throws(DiskError) {
        let perTable = Int(header.entriesPerGrainTable)
        let tableIndex = grain / perTable
        guard var table = try await grainTable(tableIndex) else {
            throw .unsupported(file: file.path, feature: "write to grain table \(tableIndex), which the directory does not allocate (tables must be preallocated, as qemu-img and VMware make them)")
        }
        let (sector, syncs) = state.withLock { state in
            let sector = state.nextFreeSector
            state.nextFreeSector += header.grainSectors
            return (sector, state.syncsEachAllocation)
        }
        guard sector <= UInt64(UInt32.max) else {
            throw .unsupported(file: file.path, feature: "grain beyond sector \(UInt32.max), which a 32-bit grain table entry cannot address")
        }
        let position = grain % perTable
        table[position] = UInt32(sector)
        let entriesPerSector = 128
        if !syncs {
            let waiting = state.withLock { [table] state in
                state.tables[tableIndex] = table
                state.pendingGrains[grain] = (sector, contents)
                state.dirtyTableSectors.insert(TableSector(table: tableIndex, sector: position / entriesPerSector))
                return state.pendingGrains.count
            }
            if waiting >= Self.deferredGrainBatch { try await writePendingGrains() }
            return
        }
        do {
            _ = try await file.engine.write(file.registered, from: UnsafeRawBufferPointer(contents.bytes), at: sector * 512)
        } catch { throw .io(error) }

        let first = position / entriesPerSector * entriesPerSector
        let tableSector = try encodedTableSector(table, first: first)
        let metadata = file.engine.makeBuffer(count: 1024)
        metadata.bytes.copyBytes(from: tableSector)
        (metadata.base + 512).copyMemory(from: tableSector, byteCount: 512)
        let sectorInTable = UInt64(first / entriesPerSector)
        var requests: [IORequest] = []
        requests.append(.write(file.registered, from: UnsafeRawBufferPointer(start: metadata.base, count: 512),
                               at: (UInt64(directory[tableIndex]) + sectorInTable) * 512))
        if let redundantDirectory, redundantDirectory[tableIndex] != 0 {
            requests.append(.write(file.registered, from: UnsafeRawBufferPointer(start: metadata.base + 512, count: 512),
                                   at: (UInt64(redundantDirectory[tableIndex]) + sectorInTable) * 512))
        }
        do {
            _ = try await file.engine.submit(requests)
            try await file.engine.fdatasync(file.registered)
        } catch { throw .io(error) }
        state.withLock { $0.tables[tableIndex] = table }
    }

    private func encodedTableSector(_ table: [UInt32], first: Int) throws(DiskError) -> [UInt8] {
        var bytes = SparseExtent.encodeEntries(table[first..<min(first + 128, table.count)])
        bytes += [UInt8](repeating: 0, count: 512 - bytes.count)
        return bytes
    }

    /// Inflates a streamOptimized grain after checking its marker.
    func readCompressedGrain(_ grain: Int) async throws(DiskError) -> [UInt8] {
        let entry = try await entry(forGrain: grain)
        return try await StreamOptimizedFooter.readGrain(file, header: header, grain: grain, sector: UInt64(entry))
    }

    /// Every allocated grain, as (grain index, entry), in grain order.
    func allocatedGrains() async throws(DiskError) -> [(grain: Int, entry: UInt32)] {
        var result: [(Int, UInt32)] = []
        let perTable = Int(header.entriesPerGrainTable)
        let grains = Int((header.capacitySectors + header.grainSectors - 1) / header.grainSectors)
        for tableIndex in directory.indices {
            guard let table = try await grainTable(tableIndex) else { continue }
            for (position, entry) in table.enumerated() where entry != SparseExtent.unallocatedEntry {
                let grain = tableIndex * perTable + position
                if grain < grains { result.append((grain, entry)) }
            }
        }
        return result
    }

    /// Makes a new, empty sparse extent file laid out as qemu-img lays it out, with `descriptor`
    /// embedded when given (monolithicSparse) or none (an extent of a split disk).
    /// Makes a new extent file; `syncs` false leaves its flush to the disk's writer (see `VMDKImage.create`).
    static func create(path: String, capacitySectors: UInt64, grainSectors: UInt64 = 128, embeddedDescriptor: String?, syncs: Bool = true,
                       engine: IOEngine) async throws(DiskError) {
        let descriptorSectors = embeddedDescriptor == nil ? 0 : embeddedDescriptorSectors
        let header = SparseExtentHeader.forNewExtent(capacitySectors: capacitySectors, grainSectors: grainSectors, embeddedDescriptorSectors: descriptorSectors)
        guard header.grainTableCount <= maximumGrainTables else {
            throw .invalidArgument("a capacity of \(capacitySectors) sectors needs more than \(maximumGrainTables) grain tables")
        }
        try HostFile.create(path: path, length: header.overheadSectors * 512)
        let file = try HostFile(path: path, writable: true, engine: engine)
        try await file.writeSectors(header.serialized(), at: 0)
        if let embeddedDescriptor {
            try await writeEmbeddedDescriptor(embeddedDescriptor, to: file, header: header)
        }
        let tables = (0..<header.grainTableCount).map { UInt64($0) * header.grainTableSectors }
        for directoryStart in [header.redundantDirectoryOffset, header.directoryOffset] {
            let firstTable = directoryStart + header.grainDirectorySectors
            var bytes = encodeEntries(tables.map { UInt32(firstTable + $0) })
            bytes += [UInt8](repeating: 0, count: Int(header.grainDirectorySectors) * 512 - bytes.count)
            try await file.writeSectors(bytes, at: directoryStart * 512)
        }
        if syncs { try await file.flush() }
    }

    /// Rewrites the descriptor held in the extent's descriptor sectors.
    static func writeEmbeddedDescriptor(_ text: String, to file: HostFile, header: SparseExtentHeader) async throws(DiskError) {
        var bytes = Array(text.utf8)
        let room = Int(header.descriptorSectors) * 512
        guard header.descriptorOffset > 0, bytes.count <= room else {
            throw .unsupported(file: file.path, feature: "descriptor of \(bytes.count) bytes in an embedded space of \(room) bytes")
        }
        bytes += [UInt8](repeating: 0, count: (bytes.count + 511) / 512 * 512 - bytes.count)
        try await file.writeSectors(bytes, at: header.descriptorOffset * 512)
    }
}
