import Foundation

/// Finds an image's program inside its root folder the way a shell would (PATH for a bare
/// name, the working folder for a relative one), resolving symlinks within the root: a link
/// to "/bin/busybox" means the root's /bin/busybox, never the host's.
public enum ProgramResolver {
    public static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    /// The absolute in-root path of the regular, executable file `program` names, or an error naming it.
    public static func resolve(_ program: String, rootfs: URL, environment: [String], workingDir: String) throws(ImageError) -> String {
        guard !program.isEmpty else { throw .malformed(what: "image config", problem: "entrypoint/cmd names an empty program") }
        let candidates = candidates(program, environment: environment, workingDir: workingDir)
        for candidate in candidates {
            if let found = resolveLinks(candidate, rootfs: rootfs) { return found }
        }
        throw .malformed(what: "image config", problem: "program \"\(program.prefix(200))\" is not an executable file in the image (looked in \(candidates.prefix(8).joined(separator: ", ")))")
    }

    /// Where a shell looks for `program`, in order: itself when it is absolute, under the
    /// working folder when it holds a slash, else in each folder of the environment's PATH.
    public static func candidates(_ program: String, environment: [String], workingDir: String) -> [String] {
        if program.hasPrefix("/") { return [program] }
        if program.contains("/") { return [(workingDir.isEmpty ? "/" : workingDir) + "/" + program] }
        let path = environment.last(where: { $0.hasPrefix("PATH=") }).map { String($0.dropFirst(5)) } ?? defaultPath
        return path.split(separator: ":").map { String($0) + "/" + program }
    }

    /// The in-root path of the file `path` names once its links are followed inside `rootfs`,
    /// when that is a regular file with an execute bit.
    public static func realPath(_ path: String, rootfs: URL) -> String? { resolveLinks(path, rootfs: rootfs) }

    /// Resolves `path` inside `rootfs` (".." stops at the root; at most 40 links); the result
    /// when it names a regular file with an execute bit.
    static func resolveLinks(_ path: String, rootfs: URL) -> String? {
        var pending = path.split(separator: "/").map(String.init)
        var resolved: [String] = []
        var hops = 0
        while !pending.isEmpty {
            let part = pending.removeFirst()
            if part == "." || part.isEmpty { continue }
            if part == ".." { _ = resolved.popLast(); continue }
            let host = rootfs.path + "/" + (resolved + [part]).joined(separator: "/")
            var info = stat()
            guard lstat(host, &info) == 0 else { return nil }
            if info.st_mode & S_IFMT == S_IFLNK {
                hops += 1
                guard hops <= 40 else { return nil }
                var buffer = [CChar](repeating: 0, count: 4097)
                let count = readlink(host, &buffer, 4096)
                guard count > 0 else { return nil }
                let target = String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if target.hasPrefix("/") { resolved = [] }
                pending = target.split(separator: "/").map(String.init) + pending
                continue
            }
            resolved.append(part)
        }
        let final = rootfs.path + "/" + resolved.joined(separator: "/")
        var info = stat()
        guard lstat(final, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_mode & 0o111 != 0 else { return nil }
        return "/" + resolved.joined(separator: "/")
    }
}
