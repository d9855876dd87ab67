import CShims
import Foundation

/// Applies layer tarballs, bottom first, onto a root folder. Every path is walked from the
/// root's descriptor one component at a time with O_NOFOLLOW and every change is made with
/// the *at calls relative to its parent's descriptor, so nothing outside the root is ever
/// touched: `..`, absolute paths and writes through symlinks are refused by name. Whiteouts
/// (.wh.NAME) and opaque folders (.wh..wh..opq) remove what lower layers made; hard links,
/// symlinks, modes, owners (when run as root) and times are kept; device nodes are refused.
final class LayerUnpacker {
    private let root: Int32
    private let limits: UnpackLimits
    private let asRoot = geteuid() == 0
    private var entries = 0
    private var totalBytes: Int64 = 0
    var unpackedBytes: Int64 { totalBytes }
    private var layer = "-"
    private var entry = "-"
    /// Paths this layer made, and their ancestors (an opaque folder keeps them).
    private var touched: Set<String> = []
    private var folders: [(path: [String], mode: UInt32, time: Int64)] = []
    private var content = [UInt8]()

    init(root: URL, limits: UnpackLimits) throws(ImageError) {
        self.limits = limits
        let fd = open(root.path, O_DIRECTORY | O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw .io("cannot open the unpack folder \(root.path): \(String(cString: strerror(errno)))") }
        self.root = fd
    }

    deinit { close(root) }

    private func refuse(_ problem: String) -> ImageError { .unsafeLayer(layer: layer, entry: entry, problem: problem) }

    private func failure(_ what: String) -> ImageError {
        let code = errno
        return .unsafeLayer(layer: layer, entry: entry, problem: "\(what): \(String(cString: strerror(code)))")
    }

    /// Applies one layer's tarball.
    func apply(_ reader: TarReader, layer: String) throws(ImageError) {
        self.layer = layer
        touched = []
        folders = []
        while let header = try reader.next() {
            entry = header.path
            entries += 1
            guard entries <= limits.maxEntries else { throw refuse("the image has more than \(limits.maxEntries) entries (a bomb of tiny files?)") }
            try applyEntry(header, reader)
        }
        try reader.drain()
        // Folder modes and times last: a read-only folder must not stop its own entries.
        for folder in folders.reversed() {
            entry = folder.path.joined(separator: "/")
            let fd = try openFolder(folder.path, create: false)
            defer { if fd != root { close(fd) } }
            if fchmod(fd, mode_t(folder.mode)) != 0 { throw failure("chmod") }
            var times = [timespec(tv_sec: Int(folder.time), tv_nsec: 0), timespec(tv_sec: Int(folder.time), tv_nsec: 0)]
            _ = futimens(fd, &times)
        }
    }

    /// The path's components: a "./" prefix, "." and empty components dropped; ".." refused.
    func components(_ path: String, what: String = "path") throws(ImageError) -> [String] {
        // "/" alone is the root folder's own entry (umoci writes one); any other absolute path is refused.
        if path.hasPrefix("/"), !path.allSatisfy({ $0 == "/" || $0 == "." }) { throw refuse("\(what) \"\(path.prefix(200))\" is absolute; layer paths are relative to the image's root") }
        var parts: [String] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) where part != "." {
            if part == ".." { throw refuse("\(what) \"\(path.prefix(200))\" contains '..'") }
            guard part.utf8.count <= 255 else { throw refuse("\(what) has a component over 255 bytes") }
            parts.append(String(part))
        }
        guard parts.count <= 256, path.utf8.count <= 4096 else { throw refuse("\(what) is over 4096 bytes or 256 components deep") }
        return parts
    }

    private func applyEntry(_ header: TarEntry, _ reader: TarReader) throws(ImageError) {
        let parts = try components(header.path)
        guard let name = parts.last else {
            // The root itself ("./"): its mode only.
            if header.kind == .directory { folders.append(([], header.mode, header.modificationTime)); return }
            throw refuse("a \(header.kind) entry names the root folder")
        }
        let parentPath = Array(parts.dropLast())
        if name.hasPrefix(".wh.") { return try whiteout(name: name, parent: parentPath) }
        switch header.kind {
        case .characterDevice, .blockDevice:
            throw refuse("is a device node; device nodes are refused in images")
        default: break
        }
        if header.kind == .file {
            guard header.size <= limits.maxFileBytes else {
                throw refuse("claims \(header.size) bytes, over the \(limits.maxFileBytes)-byte limit for a file")
            }
            guard totalBytes + header.size <= limits.maxTotalBytes else {
                throw refuse("the image's files come to more than the \(limits.maxTotalBytes)-byte limit")
            }
        }
        let parent = try openFolder(parentPath, create: true)
        defer { if parent != root { close(parent) } }
        var ancestor: [String] = []
        for part in parts {
            ancestor.append(part)
            touched.insert(ancestor.joined(separator: "/"))
        }
        let existing = kindAt(parent, name)
        if header.kind == .directory {
            if existing != S_IFDIR {
                if existing != nil { try remove(parent, name) }
                if mkdirat(parent, name, 0o755) != 0 { throw failure("mkdir") }
            }
            if !header.xattrs.isEmpty {
                let folder = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard folder >= 0 else { throw failure("open folder") }
                defer { close(folder) }
                try setXAttrs(header.xattrs, on: folder)
            }
            folders.append((parts, header.mode, header.modificationTime))
            return
        }
        if header.kind == .hardLink {
            let targetParts = try components(header.linkName, what: "hard link target")
            if targetParts == parts { return }
            guard let targetName = targetParts.last else { throw refuse("hard link to the root folder") }
            let targetParent = try openFolder(Array(targetParts.dropLast()), create: false)
            defer { if targetParent != root { close(targetParent) } }
            guard let targetKind = kindAt(targetParent, targetName) else { throw refuse("hard link to \"\(header.linkName.prefix(200))\", which does not exist") }
            guard targetKind != S_IFDIR else { throw refuse("hard link to a folder") }
            if existing != nil { try remove(parent, name) }
            if linkat(targetParent, targetName, parent, name, 0) != 0 { throw failure("hard link to \(header.linkName.prefix(200))") }
            return
        }
        if existing != nil { try remove(parent, name) }
        switch header.kind {
        case .symlink:
            guard !header.linkName.isEmpty else { throw refuse("a symlink with an empty target") }
            if symlinkat(header.linkName, parent, name) != 0 { throw failure("symlink") }
        case .fifo:
            if mkfifoat(parent, name, mode_t(header.mode & 0o777)) != 0 { throw failure("mkfifo") }
        case .file:
            // O_EXCL after the removal above: a symlink planted at the name is never written through.
            let fd = openat(parent, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw failure("create") }
            defer { close(fd) }
            try reader.readContent { piece throws(ImageError) in
                var offset = 0
                while offset < piece.count {
                    // unsafe: write reads within the piece's bounds, from offset on.
                    let written = write(fd, piece.baseAddress! + offset, piece.count - offset)
                    if written < 0 {
                        if errno == EINTR { continue }
                        throw failure("write")
                    }
                    offset += written
                }
            }
            totalBytes += header.size
            if asRoot, fchown(fd, uid_t(clamping: header.uid), gid_t(clamping: header.gid)) != 0 { throw failure("chown") }
            try setXAttrs(header.xattrs, on: fd)
            if fchmod(fd, mode_t(header.mode)) != 0 { throw failure("chmod") }
            var times = [timespec(tv_sec: Int(header.modificationTime), tv_nsec: 0), timespec(tv_sec: Int(header.modificationTime), tv_nsec: 0)]
            _ = futimens(fd, &times)
            return
        default:
            break
        }
        if asRoot, fchownat(parent, name, uid_t(clamping: header.uid), gid_t(clamping: header.gid), AT_SYMLINK_NOFOLLOW) != 0 { throw failure("chown") }
        var times = [timespec(tv_sec: Int(header.modificationTime), tv_nsec: 0), timespec(tv_sec: Int(header.modificationTime), tv_nsec: 0)]
        _ = utimensat(parent, name, &times, AT_SYMLINK_NOFOLLOW)
    }

    /// Namespaces of the extended attributes an image may set: `user.`, `trusted.` and file
    /// capabilities (`security.capability`, which images use for ping and the like). Others
    /// (`security.selinux`, POSIX ACLs) belong to the host's policy and are left out.
    static func keepsXAttr(_ name: String) -> Bool {
        name.hasPrefix("user.") || name.hasPrefix("trusted.") || name == "security.capability"
    }

    /// Sets `xattrs` (those `keepsXAttr` allows) on the open file or folder `fd`.
    private func setXAttrs(_ xattrs: [TarXAttr], on fd: Int32) throws(ImageError) {
        for xattr in xattrs where Self.keepsXAttr(xattr.name) {
            guard xattr.value.count <= Self.maxXAttrBytes else {
                throw refuse("xattr \(xattr.name) holds \(xattr.value.count) bytes, over the \(Self.maxXAttrBytes)-byte limit")
            }
            // unsafe: fsetxattr reads value.count bytes from the array's storage.
            let result = xattr.value.withUnsafeBytes { fsetxattr(fd, xattr.name, $0.baseAddress, $0.count, 0) }
            if result != 0 { throw failure("set xattr \(xattr.name)") }
        }
    }

    /// XATTR_SIZE_MAX.
    static let maxXAttrBytes = 65536

    /// .wh.NAME removes NAME from the lower layers; .wh..wh..opq empties its folder of them.
    private func whiteout(name: String, parent parentPath: [String]) throws(ImageError) {
        let parent: Int32
        do { parent = try openFolder(parentPath, create: false) } catch {
            if case .unsafeLayer(_, _, let problem) = error, problem.hasSuffix("does not exist") { return }
            throw error
        }
        defer { if parent != root { close(parent) } }
        if name == ".wh..wh..opq" {
            let prefix = parentPath.isEmpty ? "" : parentPath.joined(separator: "/") + "/"
            for child in try list(parent) where !touched.contains(prefix + child) { try remove(parent, child) }
            return
        }
        let target = String(name.dropFirst(4))
        guard !target.isEmpty, target != ".", target != "..", !target.hasPrefix(".wh.") else { throw refuse("a whiteout naming \"\(target.prefix(100))\"") }
        if kindAt(parent, target) != nil { try remove(parent, target) }
    }

    /// Opens a folder below the root, one component at a time, never following a symlink;
    /// with `create`, makes missing folders (mode 0755).
    private func openFolder(_ parts: [String], create: Bool) throws(ImageError) -> Int32 {
        var fd = root
        var walked: [String] = []
        for part in parts {
            walked.append(part)
            var next = openat(fd, part, O_DIRECTORY | O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
            if next < 0 && errno == ENOENT && create {
                if mkdirat(fd, part, 0o755) != 0 && errno != EEXIST {
                    if fd != root { close(fd) }
                    throw failure("mkdir \(walked.joined(separator: "/"))")
                }
                touched.insert(walked.joined(separator: "/"))
                next = openat(fd, part, O_DIRECTORY | O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
            }
            let code = errno
            if fd != root { close(fd) }
            guard next >= 0 else {
                let path = walked.joined(separator: "/")
                switch code {
                case ELOOP, ENOTDIR:
                    throw refuse("its parent \"\(path.prefix(200))\" is a symlink or not a folder; nothing is written through links")
                case ENOENT:
                    throw refuse("its parent \"\(path.prefix(200))\" does not exist")
                default:
                    throw refuse("opening \"\(path.prefix(200))\": \(String(cString: strerror(code)))")
                }
            }
            fd = next
        }
        return fd
    }

    /// The file type bits of what is at `name` (not followed), or nil when nothing is.
    private func kindAt(_ parent: Int32, _ name: String) -> mode_t? {
        var info = stat()
        guard fstatat(parent, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { return nil }
        return info.st_mode & S_IFMT
    }

    private func list(_ folder: Int32) throws(ImageError) -> [String] { try TreeRemoval.list(folder) }

    /// Removes `name` below `parent`, a folder with everything in it; links are removed, never followed.
    private func remove(_ parent: Int32, _ name: String) throws(ImageError) {
        do { try TreeRemoval.remove(parent, name) } catch { throw refuse("\(error)") }
    }
}
