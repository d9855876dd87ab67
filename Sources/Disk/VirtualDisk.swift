import Foundation
import IOEngine
import Synchronization

/// A disk as the engine sees it: a chain of VMDK disks, the top one first. A read falls
/// through the chain to the first disk holding each grain (zeros below the last), with
/// adjacent grains of one host file read in one request; a write lands in the top disk only.
///
/// The read and write path is `nonisolated(nonsending)` down to the engine: it runs on its
/// caller's executor (the I/O thread, for tasks that prefer the engine's), where a plain
/// nonisolated async function would check for a hop to the generic executor at every call
/// level, eight times per 4 KiB read.
///
/// `@unchecked Sendable`: every field is a `let`; the CID's renewal is serialised by `changeLock` and recorded in
/// `contentIDRenewed` (a Mutex), and the layers' extents lock for themselves.
public final class VirtualDisk: @unchecked Sendable {
    /// The chain, top first: `layers[0]` is the disk opened, the last one has no parent.
    public let layers: [VMDKImage]
    public let capacityBytes: UInt64
    public let engine: IOEngine
    /// A chain longer than this is refused (it is a loop or a hostile descriptor).
    static let maximumDepth = 255

    private let changeLock = AsyncLock()
    private let contentIDRenewed = Mutex(false)

    private init(layers: [VMDKImage], engine: IOEngine) {
        self.layers = layers
        self.engine = engine
        capacityBytes = layers[0].capacityBytes
    }

    /// Opens `path` and its parents. Only the top disk is opened for writing, if `writable`.
    /// A parent whose CID differs from its child's parentCID is refused.
    public static func open(path: String, writable: Bool = false, direct: Bool = true, engine: IOEngine) async throws(DiskError) -> VirtualDisk {
        var layers = [try await VMDKImage.open(path: path, writable: writable, direct: direct, engine: engine)]
        var seen: Set<String> = [URL(fileURLWithPath: path).standardizedFileURL.path]
        while let child = layers.last, child.descriptor.parentCID != Descriptor.noParent {
            guard let hint = child.descriptor.parentFileNameHint else { break }
            let parentPath = hint.hasPrefix("/") ? hint : (child.folder as NSString).appendingPathComponent(hint)
            let standardized = URL(fileURLWithPath: parentPath).standardizedFileURL.path
            guard seen.insert(standardized).inserted else {
                throw .malformed(file: child.path, field: "descriptor parentFileNameHint", problem: "\"\(hint)\" leads back into the chain (a loop)")
            }
            guard layers.count < maximumDepth else {
                throw .malformed(file: child.path, field: "descriptor parentFileNameHint", problem: "the chain is deeper than \(maximumDepth) disks")
            }
            let parent = try await VMDKImage.open(path: parentPath, writable: false, direct: direct, engine: engine)
            guard parent.descriptor.cid == child.descriptor.parentCID else {
                throw .parentMismatch(child: child.path, parent: parentPath, expectedCID: child.descriptor.parentCID, foundCID: parent.descriptor.cid)
            }
            layers.append(parent)
        }
        return VirtualDisk(layers: layers, engine: engine)
    }

    private func checkRange(_ what: String, offset: UInt64, count: Int) throws(DiskError) {
        guard offset % 512 == 0, count % 512 == 0 else {
            throw .invalidArgument("\(what) at offset \(offset) of \(count) bytes is not in whole 512-byte sectors")
        }
        guard offset <= capacityBytes, UInt64(count) <= capacityBytes - offset else {
            throw .outOfRange(what: what, offset: offset, length: UInt64(count), capacity: capacityBytes)
        }
    }

    private static func isAligned(_ pointer: UnsafeRawPointer?) -> Bool {
        UInt(bitPattern: pointer) % 512 == 0
    }

    /// Reads `buffer.count` bytes at `offset` (both in whole sectors).
    nonisolated(nonsending) public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) async throws(DiskError) {
        try checkRange("read", offset: offset, count: buffer.count)
        if buffer.isEmpty { return }
        if Self.isAligned(buffer.baseAddress) {
            try await read(layers: layers[...], into: buffer, at: offset)
        } else {
            let bounce = engine.makeBuffer(count: buffer.count)
            try await read(layers: layers[...], into: bounce.bytes, at: offset)
            buffer.copyMemory(from: UnsafeRawBufferPointer(bounce.bytes))
        }
    }

    /// Reads `count` bytes at `offset` into a new array, for callers without I/O memory of their own.
    public func read(count: Int, at offset: UInt64) async throws(DiskError) -> [UInt8] {
        let buffer = engine.makeBuffer(count: count)
        try await read(into: buffer.bytes, at: offset)
        return Array(buffer.bytes)
    }

    /// Writes `bytes` at `offset`, copying them into I/O memory first.
    public func write(_ bytes: [UInt8], at offset: UInt64) async throws(DiskError) {
        let buffer = engine.makeBuffer(count: bytes.count)
        buffer.bytes.copyBytes(from: bytes)
        try await write(UnsafeRawBufferPointer(buffer.bytes), at: offset)
    }

    /// Adds a piece to `requests`, growing the last request when the piece continues it in
    /// both the host file and the buffer, so that adjacent grains become one request.
    private static func append(_ piece: IORequest, to requests: inout [IORequest]) {
        if let last = requests.last, let joined = last.extended(by: piece) {
            requests[requests.count - 1] = joined
        } else {
            requests.append(piece)
        }
    }

    /// Reads through `layers` (a chain or the part of it below the top).
    nonisolated(nonsending) private func read(layers: ArraySlice<VMDKImage>, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) async throws(DiskError) {
        var requests: [IORequest] = []
        var position = 0
        while position < buffer.count {
            let virtual = offset + UInt64(position)
            var limit = UInt64(buffer.count - position)
            var mapping = GrainMapping.unallocated
            for layer in layers {
                let (found, length) = try await layer.map(virtual, limit: limit)
                limit = length
                if case .unallocated = found { continue }
                mapping = found
                break
            }
            let length = Int(limit)
            switch mapping {
            case .data(let file, let fileOffset):
                let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[position..<position + length])
                Self.append(.read(file.registered, into: piece, at: fileOffset), to: &requests)
            case .unallocated, .zero:
                (buffer.baseAddress! + position).initializeMemory(as: UInt8.self, repeating: 0, count: length)
            case .compressed(let extent, let grain, let offsetInGrain):
                let grainData = try await extent.readCompressedGrain(grain)
                // unsafe: the grain inflates to exactly grainBytes and offsetInGrain + length <= grainBytes (map's length); position + length <= buffer.count.
                grainData.withUnsafeBytes { source in
                    (buffer.baseAddress! + position).copyMemory(from: source.baseAddress! + offsetInGrain, byteCount: length)
                }
            }
            position += length
        }
        if requests.isEmpty { return }
        let transferred: [Int]
        do { transferred = try await engine.submit(requests) } catch { throw .io(error) }
        // A grain cut short by the end of its file (a crash while it was appended) reads as zeros.
        for (request, count) in zip(requests, transferred) where count < request.length {
            UnsafeMutableRawPointer(bitPattern: request.address + UInt(count))!.initializeMemory(as: UInt8.self, repeating: 0, count: request.length - count)
        }
    }

    /// Writes `data` at `offset` (both in whole sectors) into the top disk. A grain the top disk
    /// does not hold yet is allocated whole, with the rest of it filled from the chain below.
    nonisolated(nonsending) public func write(_ data: UnsafeRawBufferPointer, at offset: UInt64) async throws(DiskError) {
        let top = layers[0]
        guard top.writable else { throw .readOnly(file: top.path, reason: "the disk was opened read-only") }
        try checkRange("write", offset: offset, count: data.count)
        if data.isEmpty { return }
        if !Self.isAligned(data.baseAddress) {
            let bounce = engine.makeBuffer(count: data.count)
            bounce.bytes.copyMemory(from: data)
            try await write(UnsafeRawBufferPointer(bounce.bytes), at: offset)
            return
        }
        try await renewContentID()
        var requests: [IORequest] = []
        var position = 0
        while position < data.count {
            let virtual = offset + UInt64(position)
            let (mapping, limit) = try await top.map(virtual, limit: UInt64(data.count - position))
            let length = Int(limit)
            let piece = UnsafeRawBufferPointer(rebasing: data[position..<position + length])
            switch mapping {
            case .data(let file, let fileOffset):
                Self.append(.write(file.registered, from: piece, at: fileOffset), to: &requests)
            case .unallocated, .zero:
                try await allocateAndWrite(piece, at: virtual)
            case .compressed:
                throw .readOnly(file: top.path, reason: "its grains are compressed (streamOptimized)")
            }
            position += length
        }
        if requests.isEmpty { return }
        do { _ = try await engine.submit(requests) } catch { throw .io(error) }
    }

    /// Writes `piece` (within one grain) into a grain the top disk has not allocated: under the
    /// extent's allocation lock, looks again (another writer may have allocated it meanwhile),
    /// then builds the whole grain from the chain below and `piece`, and allocates it.
    nonisolated(nonsending) private func allocateAndWrite(_ piece: UnsafeRawBufferPointer, at virtual: UInt64) async throws(DiskError) {
        let top = layers[0]
        guard let index = top.extentIndex(containing: virtual), case .sparse(let extent) = top.extents[index].backing else {
            throw .readOnly(file: top.path, reason: "the extent at offset \(virtual) is a ZERO extent")
        }
        let extentStart = top.extents[index].start
        try await extent.allocationLock.withLock { () async throws(DiskError) in
            let (mapping, _) = try await extent.map(virtual - extentStart, limit: UInt64(piece.count))
            if case .data(let file, let fileOffset) = mapping {
                do throws(IOUringError) {
                    _ = try await engine.write(file.registered, from: piece, at: fileOffset)
                } catch { throw .io(error) }
                return
            }
            let grainBytes = extent.grainBytes
            let grain = Int((virtual - extentStart) / grainBytes)
            let grainStart = extentStart + UInt64(grain) * grainBytes
            let contents = engine.makeBuffer(count: Int(grainBytes))
            if case .unallocated = mapping, layers.count > 1 {
                let readable = Int(min(grainBytes, capacityBytes - grainStart))
                try await read(layers: layers.dropFirst(), into: UnsafeMutableRawBufferPointer(start: contents.base, count: readable), at: grainStart)
            }
            (contents.base + Int(virtual - grainStart)).copyMemory(from: piece.baseAddress!, byteCount: piece.count)
            try await extent.allocate(grain: grain, contents: contents)
        }
    }

    /// Gives the top disk a new CID, once per open disk, as VMware does on the first write: a
    /// child made from the old contents then no longer opens on top of the changed disk. The
    /// first write does it (a descriptor write and a flush); a caller that times writes calls
    /// it first, so that the flush, which waits for whatever the host still buffers, is not
    /// counted against the writes.
    nonisolated(nonsending) public func renewContentID() async throws(DiskError) {
        guard layers[0].writable else { throw .readOnly(file: layers[0].path, reason: "the disk was opened read-only") }
        if contentIDRenewed.withLock({ $0 }) { return }
        try await changeLock.withLock { () async throws(DiskError) in
            if contentIDRenewed.withLock({ $0 }) { return }
            let old = layers[0].descriptor.cid
            var fresh = UInt32.random(in: 0...0xFFFF_FFFD)
            while fresh == old { fresh = UInt32.random(in: 0...0xFFFF_FFFD) }
            try await layers[0].updateDescriptor { $0.cid = fresh }
            contentIDRenewed.withLock { $0 = true }
        }
    }

    /// Stops writing and flushing the top disk's new grains one by one (they go in batches, the
    /// grain tables at `flush`): for a disk written whole by one task that calls `flush` at its
    /// end and only then records the disk complete (an image's layer disk, written again after
    /// a crash), not for a live container's disk.
    public func deferAllocationSyncs() {
        for extent in layers[0].extents {
            if case .sparse(let sparse) = extent.backing { sparse.deferAllocationSyncs() }
        }
    }

    /// Makes every completed write durable.
    public func flush() async throws(DiskError) {
        var flushed: Set<UInt32> = []
        for extent in layers[0].extents {
            switch extent.backing {
            case .sparse(let sparse) where flushed.insert(sparse.file.registered.slot).inserted:
                try await sparse.writeDeferred()
                try await sparse.file.flush()
            case .flat(let file, _) where flushed.insert(file.registered.slot).inserted:
                try await file.flush()
            default:
                continue
            }
        }
    }
}
