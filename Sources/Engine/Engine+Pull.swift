import Foundation
import Images

extension Engine {
    /// The datastore of pulled images: blobs, unpacked root folders, downloads in flight.
    public var imageDatastore: URL { imagePuller.store.folder }

    /// Pulls `reference` from its registry (every blob verified, layers unpacked into a root
    /// folder in the datastore) and registers it as image `name` (default: the repository's
    /// last component), its program and arguments from the config's entrypoint and cmd, its
    /// environment from the config's env. The image appears only once complete; a failed
    /// pull leaves the registered images as they were.
    public func pullImage(reference text: String, name: String? = nil, credentials: RegistryCredentials? = nil,
                          by actor: String) async throws -> ImageRecord {
        try await audited("image.pull", subject: text, actor: actor) {
            try ensureAccepting()
            let reference: ImageReference
            do { reference = try ImageReference(parsing: text) } catch { throw EngineError.invalid("reference", "\(error)") }
            let imageName = name ?? String(reference.repository.split(separator: "/").last ?? "")
            guard Self.validName(imageName) else {
                throw EngineError.invalid("name", "image name \"\(imageName.prefix(100))\" must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
            }
            if registry.withLock({ $0.images[imageName] != nil }) {
                throw EngineError(.conflict, "image \(imageName) already exists (remove it first or pull with another name)", field: "name")
            }
            do {
                return try await imagePuller.pull(reference, credentials: credentials) { pulled, rootfs in
                    try await register(pulled, rootfs: rootfs, as: imageName, source: "image \(reference)", field: "reference", by: actor)
                }
            } catch let error as ImageError {
                throw Self.engineError(error)
            }
        }
    }

    /// Registers an image installed in the datastore (pulled or committed) as `name`: its
    /// program and arguments from the config's entrypoint and cmd (the program found in its
    /// root folder), its environment from the config's env.
    func register(_ pulled: PulledImage, rootfs: URL, as name: String, source: String, field: String, by actor: String) async throws -> ImageRecord {
        let commandLine = pulled.entrypoint + pulled.cmd
        guard let program = commandLine.first else {
            throw EngineError.invalid(field, "\(source): its config names no entrypoint or cmd, so there is no program to run")
        }
        let executable = try ProgramResolver.resolve(program, rootfs: rootfs, environment: pulled.env, workingDir: pulled.workingDir)
        var image = ImageRecord(name: name, rootfs: rootfs.path, executable: executable, arguments: Array(commandLine.dropFirst()),
                                environment: pulled.env)
        image.pulled = pulled
        return try await addImage(image, by: actor)
    }

    /// The pulls in flight: phase, layers to download, bytes arrived.
    public func pullsInProgress() -> [PullProgress] { imagePuller.progress() }

    /// Removes the unpacked root folders and blobs no registered image uses, and any
    /// leftovers of interrupted pulls.
    public func collectImageGarbage(by actor: String) async throws -> ImagePuller.GarbageReport {
        try await audited("image.gc", subject: imageDatastore.path, actor: actor) {
            try ensureAccepting()
            let used = Set(images().map(\.rootfs))
            let puller = imagePuller
            do { return try await onBlockingThread { try puller.collectGarbage(keeping: used) } } catch let error as ImageError {
                throw Self.engineError(error)
            }
        }
    }

    /// Remote and content failures are the request's (4xx: the image named cannot be had or
    /// is refused); only the host's own failures are the engine's.
    static func engineError(_ error: ImageError) -> EngineError {
        switch error {
        case .badReference, .malformed, .digestMismatch, .unsafeLayer, .unsupported: EngineError(.invalid, error.description, field: "reference")
        case .busy(let message): EngineError(.conflict, message)
        case .registry, .unauthorized: EngineError(.notFound, error.description, field: "reference")
        case .io: EngineError(.failed, error.description)
        }
    }
}
