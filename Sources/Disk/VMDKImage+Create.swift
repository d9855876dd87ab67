import Foundation
import IOEngine

/// The subformats this engine writes.
public enum WritableSubformat: String, Sendable, CaseIterable {
    case monolithicSparse, monolithicFlat, twoGbMaxExtentSparse
}

extension VMDKImage {
    /// The most a twoGbMaxExtentSparse extent holds: 2047 MiB, as VMware splits them.
    static let splitExtentSectors: UInt64 = 2047 * 2048

    /// A fresh content ID: random, never the "no parent" value.
    static func newContentID() -> UInt32 { UInt32.random(in: 0...0xFFFF_FFFD) }

    /// Creates an empty disk of `capacityBytes` (whole sectors) at `path`, which must not exist.
    public static func create(at path: String, capacityBytes: UInt64, subformat: WritableSubformat = .monolithicSparse,
                              engine: IOEngine) async throws(DiskError) {
        try await create(at: path, capacityBytes: capacityBytes, subformat: subformat, parent: nil, syncs: true, engine: engine)
    }

    /// As `create(at:capacityBytes:subformat:engine:)`; `syncs` false skips the flush of a new
    /// sparse extent, for a writer that flushes the disk once it is written and only then
    /// counts it (an image's layer disk).
    public static func create(at path: String, capacityBytes: UInt64, subformat: WritableSubformat = .monolithicSparse,
                              syncs: Bool, engine: IOEngine) async throws(DiskError) {
        try await create(at: path, capacityBytes: capacityBytes, subformat: subformat, parent: nil, syncs: syncs, engine: engine)
    }

    /// Creates a child (delta) disk of the disk at `parentPath`: empty, the parent's size, and
    /// tied to the parent's current CID, so that reads fall through to the parent.
    public static func createChild(at path: String, parent parentPath: String, engine: IOEngine) async throws(DiskError) {
        try await createChild(at: path, parent: parentPath, syncs: true, engine: engine)
    }

    /// As `createChild(at:parent:engine:)`; `syncs` false as for `create`.
    public static func createChild(at path: String, parent parentPath: String, syncs: Bool, engine: IOEngine) async throws(DiskError) {
        let parent = try await VirtualDisk.open(path: parentPath, engine: engine)
        let parentFolder = URL(fileURLWithPath: parentPath).standardizedFileURL.deletingLastPathComponent().path
        let childFolder = URL(fileURLWithPath: path).standardizedFileURL.deletingLastPathComponent().path
        let hint = parentFolder == childFolder ? (parentPath as NSString).lastPathComponent : URL(fileURLWithPath: parentPath).standardizedFileURL.path
        try await create(at: path, capacityBytes: parent.capacityBytes, subformat: .monolithicSparse,
                         parent: (cid: parent.layers[0].descriptor.cid, hint: hint), syncs: syncs, engine: engine)
    }

    private static func create(at path: String, capacityBytes: UInt64, subformat: WritableSubformat,
                               parent: (cid: UInt32, hint: String)?, syncs: Bool = true, engine: IOEngine) async throws(DiskError) {
        guard capacityBytes > 0, capacityBytes % 512 == 0 else {
            throw .invalidArgument("capacity \(capacityBytes) bytes is not a positive number of 512-byte sectors")
        }
        let sectors = capacityBytes / 512
        guard sectors <= SparseExtentHeader.maximumCapacitySectors else {
            throw .invalidArgument("capacity \(capacityBytes) bytes is more than the \(SparseExtentHeader.maximumCapacitySectors * 512) a VMDK may have")
        }
        let base = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
        let folder = (path as NSString).deletingLastPathComponent
        var descriptor = Descriptor(cid: newContentID(), createType: .monolithicSparse, extents: [],
                                    database: Descriptor.defaultDatabase(capacitySectors: sectors))
        if let parent {
            descriptor.parentCID = parent.cid
            descriptor.parentFileNameHint = parent.hint
        }
        switch subformat {
        case .monolithicSparse:
            descriptor.extents = [.init(access: "RW", sectors: sectors, kind: .sparse, fileName: (path as NSString).lastPathComponent, offsetSectors: 0)]
            try await SparseExtent.create(path: path, capacitySectors: sectors, embeddedDescriptor: descriptor.rendered(), syncs: syncs, engine: engine)
        case .monolithicFlat:
            descriptor.createType = .monolithicFlat
            let name = "\(base)-flat.vmdk"
            descriptor.extents = [.init(access: "RW", sectors: sectors, kind: .flat, fileName: name, offsetSectors: 0)]
            try HostFile.create(path: (folder as NSString).appendingPathComponent(name), length: capacityBytes)
            try writeDescriptorFile(descriptor, at: path)
        case .twoGbMaxExtentSparse:
            descriptor.createType = .twoGbMaxExtentSparse
            var remaining = sectors
            var number = 1
            while remaining > 0 {
                let size = min(remaining, splitExtentSectors)
                let name = "\(base)-s\(String(format: "%03d", number)).vmdk"
                descriptor.extents.append(.init(access: "RW", sectors: size, kind: .sparse, fileName: name, offsetSectors: 0))
                try await SparseExtent.create(path: (folder as NSString).appendingPathComponent(name), capacitySectors: size, embeddedDescriptor: nil, engine: engine)
                remaining -= size
                number += 1
            }
            try writeDescriptorFile(descriptor, at: path)
        }
    }

    private static func writeDescriptorFile(_ descriptor: Descriptor, at path: String) throws(DiskError) {
        guard !FileManager.default.fileExists(atPath: path) else {
            throw .invalidArgument("\(path) already exists")
        }
        do {
            try Data(descriptor.rendered().utf8).write(to: URL(fileURLWithPath: path), options: .withoutOverwriting)
        } catch {
            throw .invalidArgument("cannot write the descriptor \(path): \(error.localizedDescription)")
        }
    }
}
