import Foundation
import ProcessVM
import Store

extension Engine {
    /// Image and container names: a letter or digit, then letters, digits, '.', '_', '-'.
    /// Checked byte by byte: every create of a worker's container checks its name (CharacterSet
    /// took a tenth of a worker's reader thread in a profile).
    static func validName(_ name: String, maxLength: Int = 63) -> Bool {
        let bytes = name.utf8
        guard let first = bytes.first, bytes.count <= maxLength, isASCIILetterOrDigit(first) else { return false }
        return bytes.allSatisfy { isASCIILetterOrDigit($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
    }

    /// A hostname: 1-64 ASCII letters, digits, '-' or '.'.
    static func validHostname(_ hostname: String) -> Bool {
        let bytes = hostname.utf8
        return !bytes.isEmpty && bytes.count <= 64
            && bytes.allSatisfy { isASCIILetterOrDigit($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") }
    }

    static func isASCIILetterOrDigit(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        default: false
        }
    }

    /// Registers an image: its rootfs folder must exist and hold its program.
    public func addImage(_ image: ImageRecord, by actor: String) async throws -> ImageRecord {
        try await audited("image.add", subject: image.name, actor: actor) {
            try ensureAccepting()
            guard Self.validName(image.name) else {
                throw EngineError.invalid("name", "image name \"\(image.name)\" must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
            }
            var isFolder: ObjCBool = false
            guard image.rootfs.hasPrefix("/"), FileManager.default.fileExists(atPath: image.rootfs, isDirectory: &isFolder), isFolder.boolValue else {
                throw EngineError.invalid("rootfs", "rootfs \"\(image.rootfs)\" is not an absolute path to a folder on this host")
            }
            guard image.executable.hasPrefix("/"), image.executable.utf8.count <= 4096, !image.executable.contains("\0"),
                  FileManager.default.isExecutableFile(atPath: image.rootfs + image.executable) else {
                throw EngineError.invalid("executable", "executable \"\(image.executable)\" is not an absolute path to a program inside the rootfs")
            }
            try Self.validateArguments(image.arguments, field: "arguments")
            try Self.validateEnvironment(image.environment, field: "environment")
            var record = image.withDefaultForkPoint()
            record.createdAt = Date().timeIntervalSince1970
            let taken = registry.withLock { $0.images[image.name] != nil }
            if taken { throw EngineError(.conflict, "image \(image.name) already exists", field: "name") }
            try await store.save(image: record.row)
            let raced = registry.withLock { registry -> Bool in
                if registry.images[image.name] != nil { return true }
                registry.images[image.name] = record
                return false
            }
            if raced { throw EngineError(.conflict, "image \(image.name) already exists", field: "name") }
            return record
        }
    }

    public func images() -> [ImageRecord] {
        registry.withLock { $0.images.values.sorted { ($0.createdAt, $0.name) < ($1.createdAt, $1.name) } }
    }

    public func image(_ name: String) throws -> ImageRecord {
        guard let image = registry.withLock({ $0.images[name] }) else { throw EngineError(.notFound, "unknown image \(name)", field: "image") }
        return image
    }

    /// Removes an image with its parent policies and warm parents; refused while any
    /// container (running or not, until removed) uses it.
    public func removeImage(_ name: String, by actor: String) async throws {
        try await audited("image.remove", subject: name, actor: actor) {
            try ensureAccepting()
            let families: [ParentFamily] = try registry.withLock { registry in
                guard registry.images[name] != nil else { throw EngineError(.notFound, "unknown image \(name)", field: "image") }
                let users = registry.containers.values.filter { $0.info.image == name }
                if !users.isEmpty {
                    throw EngineError(.conflict, "image \(name) is used by \(users.count) container(s) (e.g. \(users[0].id)); remove them first")
                }
                registry.images[name] = nil
                let ids = registry.policies.values.filter { $0.image == name }.map(\.id)
                var families: [ParentFamily] = []
                for id in ids {
                    registry.policies[id] = nil
                    registry.builds[id]?.cancel()
                    registry.builds[id] = nil
                    if let family = registry.families.removeValue(forKey: id) { families.append(family) }
                }
                return families
            }
            for family in families {
                family.release()
                record("parent.evict", subject: family.policy.id, actor: "engine", detail: "{\"reason\":\"image removed\"}")
            }
            if let workers = workerSet {
                // Its policies' parents in the workers go too (each worker records the eviction).
                for connection in workers.connections {
                    let held = (try? await connection.call("parents", WorkerParents(sharing: false), as: [ParentInfo].self)) ?? []
                    for parent in held where parent.policy.image == name {
                        _ = try? await connection.call("removeParents", WorkerParentRef(id: parent.id), as: WorkerNothing.self)
                        workers.unassign(parent.id)
                    }
                }
            }
            try await store.deleteImage(named: name)
        }
    }

    static func validateArguments(_ arguments: [String], field: String) throws {
        guard arguments.count <= 1024 else { throw EngineError.invalid(field, "\(field): \(arguments.count) entries, at most 1024") }
        guard arguments.reduce(0, { $0 + $1.utf8.count }) <= 128 * 1024 else { throw EngineError.invalid(field, "\(field): over 128 KiB in all") }
        guard !arguments.contains(where: { $0.utf8.contains(0) }) else { throw EngineError.invalid(field, "\(field): an entry holds a NUL character") }
    }

    static func validateEnvironment(_ environment: [String], field: String) throws {
        try validateArguments(environment, field: field)
        if let bad = environment.first(where: { !$0.utf8.contains(UInt8(ascii: "=")) || $0.hasPrefix("=") }) {
            throw EngineError.invalid(field, "\(field): \"\(bad)\" is not NAME=value")
        }
    }
}

extension ImageRecord {
    /// The record with its default fork point found from its program: main where the
    /// program's entry point is glibc's `_start`, else the entry point, with the reason.
    func withDefaultForkPoint() -> ImageRecord {
        var record = self
        record.mainForkPointRefusal = ProcessVM.mainForkPointRefusal(rootfs: rootfs, executable: executable)
        record.defaultForkPoint = record.mainForkPointRefusal == nil ? .main : .entry
        return record
    }
}
