import Foundation
import IOEngine

/// Moving whole disks' data: raw files to VMDK and back, between subformats, and merging a
/// child into its parent.
public enum DiskConversion {
    /// What a conversion reads or writes.
    public enum Format: Sendable, Equatable {
        case raw
        case vmdk(WritableSubformat)
    }

    /// Bytes moved per step; a multiple of every grain size in use.
    static let chunkBytes = 1 << 20

    /// Copies the disk at `source` (a VMDK chain, or a raw file when `sourceIsRaw`) into a new
    /// file at `destination`. Zero stretches are skipped, so sparse outputs stay sparse.
    public static func convert(source: String, sourceIsRaw: Bool, destination: String, format: Format, engine: IOEngine) async throws(DiskError) {
        let reader: ChunkReader
        if sourceIsRaw {
            let file = try HostFile(path: source, writable: false, engine: engine)
            let size = try file.size()
            reader = ChunkReader(capacity: (size + 511) / 512 * 512) { buffer, offset async throws(DiskError) in
                let (bytes, _) = try await file.readBytes(count: buffer.count, at: offset)
                buffer.copyBytes(from: bytes)
            }
        } else {
            let disk = try await VirtualDisk.open(path: source, engine: engine)
            reader = ChunkReader(capacity: disk.capacityBytes) { buffer, offset async throws(DiskError) in
                try await disk.read(into: buffer, at: offset)
            }
        }
        let writeChunk: (UnsafeRawBufferPointer, UInt64) async throws(DiskError) -> Void
        switch format {
        case .raw:
            try HostFile.create(path: destination, length: reader.capacity)
            let file = try HostFile(path: destination, writable: true, engine: engine)
            writeChunk = { data, offset async throws(DiskError) in
                do throws(IOUringError) {
                    _ = try await engine.write(file.registered, from: data, at: offset)
                } catch { throw .io(error) }
            }
        case .vmdk(let subformat):
            try await VMDKImage.create(at: destination, capacityBytes: reader.capacity, subformat: subformat, engine: engine)
            let disk = try await VirtualDisk.open(path: destination, writable: true, engine: engine)
            writeChunk = { data, offset async throws(DiskError) in try await disk.write(data, at: offset) }
        }
        let buffer = engine.makeBuffer(count: chunkBytes)
        let grain = 64 * 1024
        var offset: UInt64 = 0
        while offset < reader.capacity {
            let count = Int(min(UInt64(chunkBytes), reader.capacity - offset))
            let chunk = UnsafeMutableRawBufferPointer(start: buffer.base, count: count)
            try await reader.read(chunk, offset)
            var start = 0
            while start < count {
                let length = min(grain, count - start)
                let piece = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(chunk)[start..<start + length])
                if !piece.allSatisfy({ $0 == 0 }) {
                    try await writeChunk(piece, offset + UInt64(start))
                }
                start += length
            }
            offset += UInt64(count)
        }
    }

    /// Merges the child disk at `childPath` into its parent: every grain the child holds is
    /// written into the parent (whose CID then changes), and the child is re-tied to the
    /// parent's new CID, so that the chain reads the same before and after. Returns the number
    /// of bytes merged.
    @discardableResult
    public static func commit(childPath: String, engine: IOEngine) async throws(DiskError) -> UInt64 {
        let child = try await VirtualDisk.open(path: childPath, engine: engine)
        guard child.layers.count > 1 else {
            throw .invalidArgument("\(childPath) has no parent to commit into")
        }
        let parent = try await VirtualDisk.open(path: child.layers[1].path, writable: true, engine: engine)
        let top = child.layers[0]
        var ranges: [(UInt64, UInt64)] = []
        for extent in top.extents {
            switch extent.backing {
            case .sparse(let sparse):
                for (grain, _) in try await sparse.allocatedGrains() {
                    let start = extent.start + UInt64(grain) * sparse.grainBytes
                    ranges.append((start, min(sparse.grainBytes, extent.start + extent.length - start)))
                }
            case .flat, .zero:
                ranges.append((extent.start, extent.length))
            }
        }
        let buffer = engine.makeBuffer(count: chunkBytes)
        var merged: UInt64 = 0
        for (start, length) in ranges {
            var done: UInt64 = 0
            while done < length {
                let count = Int(min(UInt64(chunkBytes), length - done, parent.capacityBytes - min(parent.capacityBytes, start + done)))
                if count == 0 { break }
                let chunk = UnsafeMutableRawBufferPointer(start: buffer.base, count: count)
                try await child.read(into: chunk, at: start + done)
                try await parent.write(UnsafeRawBufferPointer(chunk), at: start + done)
                done += UInt64(count)
                merged += UInt64(count)
            }
        }
        try await parent.flush()
        let newParentCID = parent.layers[0].descriptor.cid
        let writableChild = try await VMDKImage.open(path: childPath, writable: true, engine: engine)
        try await writableChild.updateDescriptor { $0.parentCID = newParentCID }
        return merged
    }
}

/// The reading side of a conversion: a raw file or a VMDK chain, read in chunks.
struct ChunkReader {
    let capacity: UInt64
    let read: (UnsafeMutableRawBufferPointer, UInt64) async throws(DiskError) -> Void
}
