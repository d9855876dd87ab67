import Foundation

/// Root filesystems of dynamically linked programs from this host: each program with the
/// dynamic linker and shared libraries it needs (as `ldd` names them), at the same paths, so
/// that it runs the same in a process VM (the folder as "/") and natively (the host's own).
public enum DynamicRootfs {
    /// This host's python3, resolved (Debian's `python3` is a link to `python3.X`).
    public static var python: String? {
        guard let resolved = try? FileManager.default.destinationOfSymbolicLink(atPath: "/usr/bin/python3") else {
            return FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") ? "/usr/bin/python3" : nil
        }
        return resolved.hasPrefix("/") ? resolved : "/usr/bin/" + resolved
    }

    public static var isAvailable: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/ldd") }

    /// A fresh rootfs with `programs` (host paths) and what they load; `folders` (host paths)
    /// are copied whole (python's standard library, for one).
    public static func make(programs: [String], folders: [String] = [], name: String = "dynamic") throws -> URL {
        let root = try HostFacts.makeTemporaryFolder(name)
        var files = Set(programs)
        for program in programs { files.formUnion(try libraries(of: program)) }
        for file in files.sorted() { try copy(file, into: root) }
        for folder in folders { try copy(folder, into: root) }
        return root
    }

    /// The dynamic linker and libraries `ldd` lists for `program`.
    public static func libraries(of program: String) throws -> [String] {
        let result = try HostFacts.run("/usr/bin/ldd", [program])
        guard result.status == 0 else { throw RootfsError.lddFailed(program, result.stderr) }
        return result.stdout.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            if let arrow = fields.firstIndex(of: "=>"), arrow + 1 < fields.count, fields[arrow + 1].hasPrefix("/") { return String(fields[arrow + 1]) }
            if let first = fields.first?.trimmingCharacters(in: .whitespaces), first.hasPrefix("/") { return first }
            return nil
        }
    }

    public enum RootfsError: Error, CustomStringConvertible {
        case lddFailed(String, String)
        public var description: String {
            switch self {
            case .lddFailed(let program, let why): return "ldd \(program) failed: \(why)"
            }
        }
    }

    /// Copies a host file or folder to the same path under `root`, following symbolic links.
    private static func copy(_ path: String, into root: URL) throws {
        let target = root.appendingPathComponent(String(path.drop { $0 == "/" }))
        try FileManager.default.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
        let result = try HostFacts.run("/bin/cp", ["-RL", path, target.path])
        guard result.status == 0 else { throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: "cp \(path): \(result.stderr)"]) }
    }
}
