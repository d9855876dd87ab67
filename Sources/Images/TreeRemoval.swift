import Foundation

/// Removes a file or folder tree relative to a folder descriptor, never following a link:
/// a symlink planted in an unpacked tree is removed, not what it points at.
enum TreeRemoval {
    static func remove(_ parent: Int32, _ name: String) throws(ImageError) {
        var info = stat()
        guard fstatat(parent, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { return }
        if info.st_mode & S_IFMT == S_IFDIR {
            let fd = openat(parent, name, O_DIRECTORY | O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else { throw .io("cannot open \(name) to remove it: \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            _ = fchmod(fd, 0o700)
            for child in try list(fd) { try remove(fd, child) }
            if unlinkat(parent, name, AT_REMOVEDIR) != 0 { throw .io("cannot remove folder \(name): \(String(cString: strerror(errno)))") }
        } else if unlinkat(parent, name, 0) != 0 {
            throw .io("cannot remove \(name): \(String(cString: strerror(errno)))")
        }
    }

    /// Removes the tree at an absolute path (its parent is trusted: the datastore's own folders).
    static func remove(at url: URL) throws(ImageError) {
        let parent = open(url.deletingLastPathComponent().path, O_DIRECTORY | O_RDONLY | O_CLOEXEC)
        guard parent >= 0 else { return }
        defer { close(parent) }
        try remove(parent, url.lastPathComponent)
    }

    static func list(_ folder: Int32) throws(ImageError) -> [String] {
        let copy = dup(folder)
        guard copy >= 0, let stream = fdopendir(copy) else { throw .io("cannot list a folder: \(String(cString: strerror(errno)))") }
        defer { closedir(stream) }
        rewinddir(stream)
        var names: [String] = []
        while let item = readdir(stream) {
            // unsafe: d_name is a NUL-terminated array inside the dirent readdir returned.
            let name = withUnsafeBytes(of: item.pointee.d_name) { raw in String(cString: raw.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}
