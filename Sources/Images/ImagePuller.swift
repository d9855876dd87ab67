import Foundation
import IOEngine
import Logging
import Synchronization

/// Pulls images from registries into a datastore folder and unpacks them into root
/// folders the engine runs. Layout of the datastore:
///   blobs/sha256/HEX     manifests, configs and layer blobs, by digest, each verified
///   rootfs/HEX/          an unpacked image (HEX: its manifest's digest)
///   rootfs/HEX.json      what the pull recorded (`PulledImage`)
///   tmp/                 downloads and unpacks in flight (emptied by `collectGarbage`)
///   layers/CHAIN.vmdk    each layer as an ext4 disk, a child of the layer below (`LayerDisks`)
/// An image's root folder appears (by rename) only once every blob was verified and every
/// layer unpacked and checked against its diff_id.
public final class ImagePuller: Sendable {
    public let store: BlobStore
    public let limits: UnpackLimits
    let logger: Logger
    private let concurrency: Int
    /// Pulls in flight and whether a collection runs: the two exclude each other.
    private let activity = Mutex((pulls: 0, collecting: false))
    /// The pulls in flight and how far each is.
    private let board = PullBoard()
    /// Unpacking blocks on the file system: it runs here, off the cooperative threads.
    private let queue = DispatchQueue(label: "vmfork.images.unpack", attributes: .concurrent)
    /// The image layers as VMDK disks.
    public let layerDisks: LayerDisks

    public init(datastore: URL, limits: UnpackLimits = UnpackLimits(), concurrency: Int = 4, layerDiskCapacity: UInt64 = 8 << 30,
                logger: Logger) throws(ImageError) {
        store = try BlobStore(folder: datastore)
        layerDisks = LayerDisks(folder: datastore.appendingPathComponent("layers", isDirectory: true), capacityBytes: layerDiskCapacity)
        self.limits = limits
        self.concurrency = max(1, concurrency)
        self.logger = logger
        do { try FileManager.default.createDirectory(at: rootfsFolder, withIntermediateDirectories: true) } catch {
            throw .io("cannot create \(rootfsFolder.path): \(error.localizedDescription)")
        }
    }

    /// The pulls in flight: phase, layers and bytes arrived.
    public func progress() -> [PullProgress] { board.all }

    public var rootfsFolder: URL { store.folder.appendingPathComponent("rootfs", isDirectory: true) }

    /// The record of the image unpacked at `rootfs`, when it is one of this datastore's.
    public func pulledImage(atRootfs rootfs: String) -> PulledImage? {
        let url = URL(fileURLWithPath: rootfs)
        guard url.deletingLastPathComponent().standardizedFileURL.path == rootfsFolder.standardizedFileURL.path,
              let data = try? Data(contentsOf: url.appendingPathExtension("json")) else { return nil }
        return try? JSONDecoder().decode(PulledImage.self, from: data)
    }

    /// Pulls `reference`, then runs `register` with the record and its root folder while a
    /// collection is held off (so the new root folder cannot be collected before it is used).
    public func pull<T: Sendable>(_ reference: ImageReference, credentials: RegistryCredentials?,
                                  register: (PulledImage, URL) async throws -> T) async throws -> T {
        try holdCollections(doing: "pull")
        defer { releaseCollections() }
        let key = board.begin(reference.description)
        defer { board.end(key) }
        let (image, rootfs, created) = try await fetchAndUnpack(reference, credentials: credentials, progress: key)
        return try await registering(image, rootfs, created: created, register)
    }

    /// Counts a pull (or commit) in flight, which holds off collections; refused while one runs.
    func holdCollections(doing what: String) throws(ImageError) {
        let collecting = activity.withLock { activity -> Bool in
            if !activity.collecting { activity.pulls += 1 }
            return activity.collecting
        }
        if collecting { throw ImageError.busy("a garbage collection of the datastore is running; \(what) again once it is done") }
    }

    func releaseCollections() { activity.withLock { $0.pulls -= 1 } }

    func registering<T: Sendable>(_ image: PulledImage, _ rootfs: URL, created: Bool,
                                          _ register: (PulledImage, URL) async throws -> T) async throws -> T {
        do {
            return try await register(image, rootfs)
        } catch {
            // Refused after all (no program, a name taken meanwhile): a root folder this pull
            // made goes again; its blobs stay for the next pull until a collection.
            if created {
                try? TreeRemoval.remove(at: rootfs)
                unlink(rootfs.appendingPathExtension("json").path)
            }
            throw error
        }
    }

    private func fetchAndUnpack(_ reference: ImageReference, credentials: RegistryCredentials?, progress key: Int) async throws -> (PulledImage, URL, Bool) {
        let started = ContinuousClock.now
        let client = RegistryClient(reference: reference, credentials: credentials, logger: logger)
        let (manifestBytes, manifestDigest, manifest) = try await resolveManifest(client, reference)
        let configWhat = "config \(manifest.config.digest.short) of \(reference)"
        let configBytes: [UInt8]
        if store.contains(manifest.config.digest) {
            configBytes = try store.read(manifest.config.digest)
        } else {
            configBytes = try await client.smallBlob(manifest.config, what: configWhat)
        }
        let config = try ImageConfig.parse(configBytes, what: configWhat, layerCount: manifest.layers.count)
        try store.write(configBytes, as: manifest.config.digest)
        let resolved = ContinuousClock.now
        try await fetchLayers(manifest.layers, client: client, reference: reference, progress: key)
        let fetched = ContinuousClock.now
        try store.write(manifestBytes, as: manifestDigest)
        let installed = try await install(manifestDigest: manifestDigest, manifest: manifest, config: config, reference: reference.description, progress: key)
        logger.debug("image pull phases", metadata: ["reference": "\(reference)", "manifest_ms": "\(Self.milliseconds(resolved - started))",
                                                     "layers_ms": "\(Self.milliseconds(fetched - resolved))",
                                                     "unpack_and_disks_ms": "\(Self.milliseconds(ContinuousClock.now - fetched))"])
        logger.info("image pulled", metadata: ["reference": "\(reference)", "manifest": "\(manifestDigest)", "layers": "\(manifest.layers.count)",
                                               "seconds": "\((ContinuousClock.now - started).components.seconds)"])
        return installed
    }

    /// Unpacks an image whose blobs are all in the store into its root folder (unless there
    /// already), makes its layer disks and writes its record.
    func install(manifestDigest: Digest, manifest: Manifest, config: ImageConfig, reference: String, committedFrom: String? = nil,
                         progress key: Int?) async throws -> (PulledImage, URL, Bool) {
        let target = rootfsFolder.appendingPathComponent(manifestDigest.hex, isDirectory: true)
        let unpacked: Int64
        let disks: [String]?
        let created = !FileManager.default.fileExists(atPath: target.path)
        if created {
            if let key { board.update(key) { $0.phase = "unpacking" } }
            // The folder (on the unpack queue) and the layer disks (on this task) are written
            // from the blobs at once: two passes over the same layers, on two threads; small
            // layers are decoded once, for both, while the disks are being made.
            let layers = manifest.layers
            let inflated = Task { await self.inflateSmallLayers(layers) }
            async let folder = unpack(manifest.layers, diffIDs: config.rootfs.diff_ids, reference: reference, into: target, inflated: inflated.value)
            do {
                disks = try await makeLayerDisks(manifest.layers, diffIDs: config.rootfs.diff_ids, inflated: inflated)
            } catch {
                // The unpack cannot be cut short. Its refusal, if any, is the one told (as when
                // the folder was written first); otherwise the folder it made goes again.
                do { _ = try await folder } catch { throw error }
                try? TreeRemoval.remove(at: target)
                throw error
            }
            unpacked = try await folder
        } else {
            unpacked = pulledImage(atRootfs: target.path)?.unpackedBytes ?? 0
            disks = try await makeLayerDisks(manifest.layers, diffIDs: config.rootfs.diff_ids)
        }
        let settings = config.config
        let image = PulledImage(reference: reference.description, manifestDigest: manifestDigest, configDigest: manifest.config.digest,
                                layers: manifest.layers.map(\.digest), diffIDs: config.rootfs.diff_ids,
                                layerBytes: manifest.layers.reduce(0) { $0 + $1.size }, unpackedBytes: unpacked,
                                entrypoint: settings?.Entrypoint ?? [], cmd: settings?.Cmd ?? [], env: settings?.Env ?? [],
                                workingDir: settings?.WorkingDir ?? "", user: settings?.User ?? "", pulledAt: Date().timeIntervalSince1970,
                                layerDisks: disks, committedFrom: committedFrom, labels: settings?.Labels,
                                exposedPorts: settings?.ExposedPorts.map { $0.keys.sorted() }, stopSignal: settings?.StopSignal)
        let record = target.appendingPathExtension("json")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        let temporary = store.temporaryPath("record")
        do {
            try encoder.encode(image).write(to: temporary)
        } catch { throw ImageError.io("cannot write \(temporary.path): \(error.localizedDescription)") }
        guard rename(temporary.path, record.path) == 0 else { throw ImageError.io("cannot write \(record.path): \(String(cString: strerror(errno)))") }
        return (image, target, created)
    }

    /// The layers' disks (made where missing), bottom first; nil when this host has no
    /// io_uring to write them with (the image then runs from its folder only).
    /// The most bytes of decoded layers one pull holds in memory for its folder and disks to share.
    static let sharedInflationBytes = 32 << 20

    /// The layers' tars in memory, bottom first, while they add up to `sharedInflationBytes`
    /// (nil for the rest, and for any that cannot be decoded: those are streamed from the blob).
    private func inflateSmallLayers(_ layers: [Descriptor]) async -> [InflatedLayer?] {
        let store = self.store
        let limits = self.limits
        return await withCheckedContinuation { continuation in
            queue.async {
                var room = Self.sharedInflationBytes
                var result: [InflatedLayer?] = []
                for (index, layer) in layers.enumerated() {
                    let inflated = room > 0 ? LayerStream.inflate(file: store.path(layer.digest), layer: "\(index) (\(layer.digest.short))",
                                                                  maxBytes: limits.maxStreamBytes, cap: room) : nil
                    room -= inflated?.bytes.count ?? 0
                    result.append(inflated)
                }
                continuation.resume(returning: result)
            }
        }
    }

    private func makeLayerDisks(_ layers: [Descriptor], diffIDs: [Digest], inflated: Task<[InflatedLayer?], Never>? = nil) async throws -> [String]? {
        let engine: IOEngine
        do { engine = try IOEngine(queueDepth: 64, registeredFiles: 64, registeredBuffers: 16) } catch {
            logger.warning("image layers not written as disks: no I/O engine", metadata: ["error": "\(error)"])
            return nil
        }
        let started = ContinuousClock.now
        let disks = try await layerDisks.make(blobs: layers.map { store.path($0.digest) }, diffIDs: diffIDs, limits: limits, engine: engine, inflated: inflated,
                                               logger: logger)
        logger.debug("image layer disks written", metadata: ["disks": "\(disks.count)", "ms": "\(Self.milliseconds(ContinuousClock.now - started))"])
        return disks
    }

    static func milliseconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        return String(format: "%.1f", Double(seconds) * 1000 + Double(attoseconds) / 1e15)
    }

    /// The manifest for linux/amd64: by tag or digest, through an index if the registry has one.
    private func resolveManifest(_ client: RegistryClient, _ reference: ImageReference) async throws -> ([UInt8], Digest, Manifest) {
        var what = "manifest \(reference)"
        var (bytes, contentType, header) = try await client.manifest(reference.manifestReference)
        var digest = try verifyManifest(bytes, expected: reference.digest, header: header, what: what)
        if try ManifestKind.of(bytes, contentType: contentType, what: what) == .index {
            let index = try ImageIndex.parse(bytes, what: "index \(reference)")
            let chosen = try index.select(what: "index \(reference)")
            what = "manifest \(chosen.digest.short) (linux/amd64) of \(reference)"
            (bytes, contentType, header) = try await client.manifest(chosen.digest.description)
            guard Int64(bytes.count) == chosen.size else {
                throw ImageError.malformed(what: what, problem: "is \(bytes.count) bytes but the index declares \(chosen.size)")
            }
            digest = try verifyManifest(bytes, expected: chosen.digest, header: header, what: what)
            guard try ManifestKind.of(bytes, contentType: contentType, what: what) == .manifest else {
                throw ImageError.malformed(what: what, problem: "an index entry points at another index")
            }
        }
        return (bytes, digest, try Manifest.parse(bytes, what: what, contentType: contentType))
    }

    private func verifyManifest(_ bytes: [UInt8], expected: Digest?, header: String?, what: String) throws -> Digest {
        let actual = Digest.of(bytes)
        if let expected, expected != actual {
            throw ImageError.digestMismatch(what: what, expected: expected.description, actual: actual.description)
        }
        if let header, let claimed = try? Digest(parsing: header), claimed != actual {
            throw ImageError.digestMismatch(what: "\(what) (Docker-Content-Digest header)", expected: claimed.description, actual: actual.description)
        }
        return actual
    }

    /// Downloads the layers not yet in the blob store, `concurrency` at a time.
    private func fetchLayers(_ layers: [Descriptor], client: RegistryClient, reference: ImageReference, progress key: Int) async throws {
        var missing: [Descriptor] = []
        for layer in layers where !store.contains(layer.digest) && !missing.contains(where: { $0.digest == layer.digest }) { missing.append(layer) }
        board.update(key) { [missing] in
            $0.phase = "layers"
            $0.layers = missing.count
            $0.bytesTotal = missing.reduce(0) { $0 + $1.size }
        }
        let board = self.board
        if missing.count < layers.count {
            logger.info("layers already in the blob store", metadata: ["reference": "\(reference)", "reused": "\(layers.count - missing.count)"])
        }
        let store = self.store
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            func start() {
                guard next < missing.count else { return }
                let layer = missing[next]
                next += 1
                group.addTask {
                    let temporary = store.temporaryPath(layer.digest.hex + ".part")
                    do {
                        try await client.blob(layer, into: temporary, what: "layer \(layer.digest.short) of \(reference)") { count in
                            board.update(key) { $0.bytesDone += Int64(count) }
                        }
                        try store.commit(temporary, as: layer.digest)
                    } catch {
                        unlink(temporary.path)
                        throw error
                    }
                }
            }
            for _ in 0..<concurrency { start() }
            while try await group.next() != nil { start() }
        }
    }

    /// Unpacks the layers into a temporary folder, checking each against its diff_id, then
    /// renames it to `target`. Returns the bytes of file content written.
    private func unpack(_ layers: [Descriptor], diffIDs: [Digest], reference: String, into target: URL, inflated: [InflatedLayer?]) async throws -> Int64 {
        let store = self.store
        let limits = self.limits
        let logger = self.logger
        let started = ContinuousClock.now
        return try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result {
                    let temporary = store.temporaryPath("unpack")
                    do {
                        try FileManager.default.createDirectory(at: temporary, withIntermediateDirectories: false)
                        chmod(temporary.path, 0o755)
                        let unpacker = try LayerUnpacker(root: temporary, limits: limits)
                        for (index, layer) in layers.enumerated() {
                            let name = "\(index) (\(layer.digest.short))"
                            let stream = try inflated[index].map { LayerStream(inflated: $0, layer: name) }
                                ?? LayerStream(file: store.path(layer.digest), layer: name, maxBytes: limits.maxStreamBytes)
                            try unpacker.apply(TarReader(source: stream, layer: name), layer: name)
                            let diffID = stream.finishDigest()
                            guard diffID == diffIDs[index] else {
                                throw ImageError.digestMismatch(what: "layer \(name) of \(reference), uncompressed (diff_id)",
                                                                expected: diffIDs[index].description, actual: diffID.description)
                            }
                        }
                        if rename(temporary.path, target.path) != 0 {
                            let code = errno
                            // Another pull of the same manifest finished first: its folder is the same content.
                            guard code == EEXIST || code == ENOTEMPTY else { throw ImageError.io("cannot move \(temporary.path) to \(target.path): \(String(cString: strerror(code)))") }
                            try TreeRemoval.remove(at: temporary)
                        }
                        logger.debug("image layers unpacked", metadata: ["layers": "\(layers.count)", "ms": "\(Self.milliseconds(ContinuousClock.now - started))"])
                        return unpacker.unpackedBytes
                    } catch {
                        try? TreeRemoval.remove(at: temporary)
                        throw error
                    }
                })
            }
        }
    }

    /// What a collection removed.
    public struct GarbageReport: Codable, Sendable, Equatable {
        public var rootfsRemoved: Int
        public var blobsRemoved: Int
        public var bytesFreed: Int64
        /// Layer disks removed (nil from a collection that did not look at them).
        public var layerDisksRemoved: Int?
    }

    /// Removes root folders no image uses (`used`: the registered images' rootfs paths), the
    /// blobs no remaining root folder's record names, and everything in tmp/. Refused while a
    /// pull is in flight.
    public func collectGarbage(keeping used: Set<String>) throws -> GarbageReport {
        let pulls = activity.withLock { activity -> Int in
            if activity.pulls == 0 { activity.collecting = true }
            return activity.pulls
        }
        guard pulls == 0 else { throw ImageError.busy("\(pulls) pull(s) in progress; collect garbage after they finish") }
        defer { activity.withLock { $0.collecting = false } }
        var report = GarbageReport(rootfsRemoved: 0, blobsRemoved: 0, bytesFreed: 0)
        let usedPaths = Set(used.map { URL(fileURLWithPath: $0).standardizedFileURL.path })
        var keep = Set<Digest>()
        var keepDisks = Set<String>()
        let names = (try? FileManager.default.contentsOfDirectory(atPath: rootfsFolder.path)) ?? []
        for name in names {
            let stem = name.hasSuffix(".json") ? String(name.dropLast(5)) : name
            let folder = rootfsFolder.appendingPathComponent(stem, isDirectory: true)
            if usedPaths.contains(folder.standardizedFileURL.path) {
                if name.hasSuffix(".json"), let image = pulledImage(atRootfs: folder.path) {
                    keep.formUnion([image.manifestDigest, image.configDigest] + image.layers)
                    keepDisks.formUnion(image.layerDisks ?? [])
                }
                continue
            }
            if !name.hasSuffix(".json") { report.rootfsRemoved += 1 }
            report.bytesFreed += Self.bytes(at: rootfsFolder.appendingPathComponent(name))
            try TreeRemoval.remove(at: rootfsFolder.appendingPathComponent(name))
        }
        for digest in store.allDigests() where !keep.contains(digest) {
            report.bytesFreed += Self.bytes(at: store.path(digest))
            unlink(store.path(digest).path)
            report.blobsRemoved += 1
        }
        let disks = layerDisks.collect(keeping: keepDisks)
        report.layerDisksRemoved = disks.removed
        report.bytesFreed += disks.bytes
        for name in (try? FileManager.default.contentsOfDirectory(atPath: store.temporaryFolder.path)) ?? [] {
            try TreeRemoval.remove(at: store.temporaryFolder.appendingPathComponent(name))
        }
        logger.info("image garbage collected", metadata: ["rootfs": "\(report.rootfsRemoved)", "blobs": "\(report.blobsRemoved)", "bytes": "\(report.bytesFreed)"])
        return report
    }

    private static func bytes(at url: URL) -> Int64 {
        var info = stat()
        guard lstat(url.path, &info) == 0 else { return 0 }
        guard info.st_mode & S_IFMT == S_IFDIR else { return Int64(info.st_blocks) * 512 }
        var total: Int64 = 0
        if let walker = FileManager.default.enumerator(atPath: url.path) {
            for case let name as String in walker {
                var child = stat()
                if lstat(url.appendingPathComponent(name).path, &child) == 0 { total += Int64(child.st_blocks) * 512 }
            }
        }
        return total
    }
}
