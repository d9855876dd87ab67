import CShims
import Foundation
import Images

extension ImageRecord {
    /// The working directory a pulled image's config names ("/" when none).
    var startingDirectory: String {
        guard let directory = pulled?.workingDir, directory.hasPrefix("/") else { return "/" }
        return directory
    }

    /// The uid and gid a pulled image's config User names: "", "UID", "UID:GID", "NAME" or
    /// "NAME:GROUP", names looked up in the image's own /etc/passwd and /etc/group. A name
    /// the image does not define is refused by name.
    func userIDs() throws -> (uid: UInt32, gid: UInt32) {
        guard let user = pulled?.user, !user.isEmpty else { return (0, 0) }
        let parts = user.split(separator: ":", maxSplits: 1).map(String.init)
        let passwd = Self.entries(root: rootfs, "etc/passwd")
        var uid: UInt32
        var gid: UInt32 = 0
        if let number = UInt32(parts[0]) {
            uid = number
            if let entry = passwd.first(where: { $0.count > 3 && UInt32($0[2]) == number }), let primary = UInt32(entry[3]) { gid = primary }
        } else if let entry = passwd.first(where: { $0.count > 3 && $0[0] == parts[0] }), let number = UInt32(entry[2]), let primary = UInt32(entry[3]) {
            uid = number
            gid = primary
        } else {
            throw EngineError.invalid("user", "image \(name): its config's User \"\(user)\" is not a number and not in the image's /etc/passwd")
        }
        if parts.count == 2 {
            if let number = UInt32(parts[1]) {
                gid = number
            } else if let entry = Self.entries(root: rootfs, "etc/group").first(where: { $0.count > 2 && $0[0] == parts[1] }), let number = UInt32(entry[2]) {
                gid = number
            } else {
                throw EngineError.invalid("user", "image \(name): its config's group \"\(parts[1])\" is not a number and not in the image's /etc/group")
            }
        }
        return (uid, gid)
    }

    /// The colon-separated lines of a small regular file of the image (at most 1 MiB),
    /// resolved inside the image's root (RESOLVE_IN_ROOT), never waiting (O_NONBLOCK).
    private static func entries(root: String, _ path: String) -> [[String]] {
        let rootFD = open(root, CSHIMS_O_PATH | O_DIRECTORY | O_CLOEXEC)
        guard rootFD >= 0 else { return [] }
        defer { close(rootFD) }
        let fd = cshims_openat2(rootFD, path, UInt64(O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY), 0,
                                CSHIMS_RESOLVE_IN_ROOT | CSHIMS_RESOLVE_NO_MAGICLINKS)
        guard fd >= 0 else { return [] }
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG, let data = try? handle.read(upToCount: 1 << 20) else { return [] }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").map { $0.split(separator: ":", omittingEmptySubsequences: false).map(String.init) }
    }
}
