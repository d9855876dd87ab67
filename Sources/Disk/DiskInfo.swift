/// One disk of a chain as `vmdk info` shows it.
public struct DiskLayerInfo: Sendable {
    public let path: String
    public let createType: String
    public let capacityBytes: UInt64
    public let cid: UInt32
    public let parentCID: UInt32
    public let parentFileNameHint: String?
    /// "SPARSE disk-s001.vmdk (4192256 sectors)", one per extent.
    public let extents: [String]
    /// Nil when the disk has no sparse extent.
    public let grainBytes: UInt64?
    /// Bytes held in this disk's own grains (flat extents count whole).
    public let allocatedBytes: UInt64

    public var cidText: String { hex(cid) }
    public var parentCIDText: String { hex(parentCID) }
}

extension VirtualDisk {
    /// Describes every disk of the chain, top first.
    public func describe() async throws(DiskError) -> [DiskLayerInfo] {
        var result: [DiskLayerInfo] = []
        for layer in layers {
            let descriptor = layer.descriptor
            var allocated: UInt64 = 0
            var grainBytes: UInt64?
            for extent in layer.extents {
                switch extent.backing {
                case .sparse(let sparse):
                    grainBytes = sparse.grainBytes
                    allocated += UInt64(try await sparse.allocatedGrains().count) * sparse.grainBytes
                case .flat:
                    allocated += extent.length
                case .zero:
                    continue
                }
            }
            let extents = descriptor.extents.map { "\($0.kind.rawValue) \($0.fileName.isEmpty ? "-" : $0.fileName) (\($0.sectors) sectors)" }
            result.append(DiskLayerInfo(path: layer.path, createType: descriptor.createType.rawValue, capacityBytes: layer.capacityBytes,
                                        cid: descriptor.cid, parentCID: descriptor.parentCID, parentFileNameHint: descriptor.parentFileNameHint,
                                        extents: extents, grainBytes: grainBytes, allocatedBytes: allocated))
        }
        return result
    }
}
