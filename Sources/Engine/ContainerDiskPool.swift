import Disk
import HostSystem
import Foundation
import IOEngine
import Logging
import ProcessVM
import Synchronization

/// Containers' own disks, in STATE/images/containers/: each a child VMDK of its image's top
/// layer disk (a descriptor and an empty grain directory), named by the container's id and
/// removed with it, made only for a container that changes something. A few per image are
/// made ahead in ready/, as the VM pools make VMs, so a container's first change only
/// renames one into place; one that finds none makes its own (a miss).
final class ContainerDiskPool: Sendable {
    let folder: URL
    /// `folder`'s path, for the per-container paths (made as strings: see `ContainerFolder.path`).
    private let folderPath: String
    let readyFolder: URL
    let engine: IOEngine
    let logger: Logger
    /// Disks kept ready per top layer disk.
    static let target = 3
    private struct State {
        var ready: [String: [String]] = [:]
        var filling: Set<String> = []
        var misses = 0
    }
    private let state = Mutex(State())

    init(folder: URL, engine: IOEngine, logger: Logger) throws {
        self.folder = folder
        folderPath = folder.path
        readyFolder = folder.appendingPathComponent("ready", isDirectory: true)
        self.engine = engine
        self.logger = logger
        // Disks made ahead by an earlier daemon are not known to this one: made again.
        try? FileManager.default.removeItem(at: readyFolder)
        try FileManager.default.createDirectory(at: readyFolder, withIntermediateDirectories: true)
    }

    /// Containers that found no disk ready at their first change and made their own.
    var misses: Int { state.withLock { $0.misses } }

    /// Disks ready for children of the top layer disk at `top`.
    func readyCount(top: String) -> Int { state.withLock { $0.ready[top]?.count ?? 0 } }

    func path(for id: String) -> String { ContainerFolder.path("\(id).vmdk", in: folderPath) }

    /// A disk for container `id`, a child of `top`, at its first change: a ready one renamed
    /// to the container's name, or one made now under it (a miss, which waits for the I/O
    /// thread). Called on a KVM thread, under the container root's lock.
    func take(top: String, id: String) throws -> String {
        defer { refill(top: top) }
        let target = path(for: id)
        while let made = state.withLock({ $0.ready[top]?.popLast() }) {
            if rename(made, target) == 0 { return target }
            logger.warning("a ready container disk could not be taken", metadata: ["disk": "\(made)", "error": "\(String(cString: strerror(errno)))"])
        }
        state.withLock { $0.misses += 1 }
        try wait { () async throws(DiskError) in try await VMDKImage.createChild(at: target, parent: top, engine: self.engine) }
        return target
    }

    /// Removes a container's disk (with the container): wherever it is now, and by its name.
    func remove(id: String, root: ContainerDiskRoot? = nil) {
        if let path = root?.diskPath { _ = unlink(path) }
        _ = unlink(path(for: id))
    }

    /// Makes disks for `top` in the background until `target` are ready.
    func refill(top: String) {
        guard state.withLock({ $0.filling.insert(top).inserted }) else { return }
        Task(executorPreference: engine.executor) { [self] in
            defer { _ = state.withLock { $0.filling.remove(top) } }
            while state.withLock({ $0.ready[top, default: []].count }) < Self.target {
                let made = readyFolder.appendingPathComponent("\(UUID().uuidString.lowercased()).vmdk").path
                do throws(DiskError) {
                    try await VMDKImage.createChild(at: made, parent: top, engine: engine)
                } catch {
                    logger.warning("a container disk could not be made ahead", metadata: ["parent": "\(top)", "error": "\(error)"])
                    return
                }
                state.withLock { $0.ready[top, default: []].append(made) }
            }
        }
    }

    /// Runs `body` on the I/O thread and waits for it.
    private func wait(_ body: @escaping @Sendable () async throws(DiskError) -> Void) throws {
        let outcome = Mutex<Result<Void, DiskError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task(executorPreference: engine.executor) {
            let result: Result<Void, DiskError>
            do throws(DiskError) { try await body(); result = .success(()) } catch { result = .failure(error) }
            outcome.withLock { $0 = result }
            done.signal()
        }
        done.wait()
        try outcome.withLock { $0 }!.get()
    }
}

extension Engine {
    /// Containers' writable disks made at their first change because none was ready (each a
    /// miss: that change waited for a child VMDK to be made).
    public var containerDiskMisses: Int { containerDisks?.misses ?? 0 }

    /// Container disks ready for the next containers of `image` (0 when it is not served from disks).
    public func containerDisksReady(forImage name: String) -> Int {
        guard let pool = containerDisks, let image = try? image(name), let top = image.pulled?.layerDisks?.last else { return 0 }
        return pool.readyCount(top: imagePuller.layerDisks.folder.appendingPathComponent(top).path)
    }

    /// The container's own root on a writable child of its image's top disk, when the family
    /// serves its root from the image's disks; nil for a folder rootfs. The child is taken
    /// from the pool only at the container's first change: a container that only reads
    /// costs no disk (no take, no rename, no unlink, no refill).
    func containerDiskRoot(for family: ParentFamily, id: String) throws -> ContainerDiskRoot? {
        guard let pool = containerDisks, let image = family.rootFileSystem as? DiskRootFileSystem else { return nil }
        let top = image.volume.disk.layers[0].path
        let logger = self.logger
        return ContainerDiskRoot(base: image) { () throws(SystemError) -> String in
            do { return try pool.take(top: top, id: id) } catch {
                logger.error("a container's disk could not be made", metadata: ["id": "\(id)", "error": "\(error)"])
                throw SystemError(call: "make the container's disk (\(error))", errno: EIO)
            }
        }
    }
}
