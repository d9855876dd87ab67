import Disk
import Foundation
import Images
import ProcessVM

extension Engine {
    /// The root filesystem served from `image`'s top layer disk, when the engine runs
    /// containers from layer disks and the pull wrote them; nil otherwise (the folder then).
    /// Opened once per disk and shared by every family of the image.
    func layerDiskRoot(for image: ImageRecord) async throws -> DiskRootFileSystem? {
        guard rootfsFromLayerDisks, let engine = layerDiskEngine, let top = image.pulled?.layerDisks?.last else { return nil }
        let path = imagePuller.layerDisks.folder.appendingPathComponent(top).path
        if let opened = layerDiskRoots.withLock({ $0[path] }) { return opened }
        let root: DiskRootFileSystem
        do {
            root = try await DiskRootFileSystem.open(path: path, engine: engine)
        } catch {
            throw EngineError(.failed, "image \(image.name): its layer disk \(top) cannot serve a root filesystem: \(error)")
        }
        return layerDiskRoots.withLock { roots in
            if let raced = roots[path] { return raced }
            roots[path] = root
            return root
        }
    }
}
