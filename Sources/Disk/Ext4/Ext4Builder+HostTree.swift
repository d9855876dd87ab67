import CShims
import Foundation
#if canImport(Glibc)
import Glibc
#endif

extension Ext4Builder {
    /// Copies the host folder `folder` into the file system at `path` ("/" for its root):
    /// regular files, directories, symlinks, hard links (files sharing an inode stay one
    /// inode), device nodes, FIFOs and sockets, with modes, owners, nanosecond mtimes and
    /// xattrs. Symlinks are copied, never followed.
    public func addTree(folder: String, at path: String = "/") async throws(Ext4Error) {
        var links: [HostInodeKey: String] = [:]
        let info = try Self.lstatus(folder)
        guard info.st_mode & S_IFMT == S_IFDIR else { throw .invalidChange(path: folder, problem: "is not a folder") }
        try makeDirectory(path, try attributes(of: folder, info))
        try await addChildren(of: folder, at: path, links: &links)
    }

    struct HostInodeKey: Hashable {
        let device: UInt64
        let inode: UInt64
    }

    private func addChildren(of folder: String, at path: String, links: inout [HostInodeKey: String]) async throws(Ext4Error) {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: folder).sorted() } catch {
            throw .invalidChange(path: folder, problem: "cannot list it: \(error.localizedDescription)")
        }
        for name in names {
            let host = folder + "/" + name
            let target = path == "/" ? "/" + name : path + "/" + name
            let info = try Self.lstatus(host)
            let attributes = try attributes(of: host, info)
            let key = HostInodeKey(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
            let type = info.st_mode & S_IFMT
            if type != S_IFDIR, info.st_nlink > 1 {
                if let first = links[key] {
                    try addHardLink(target, target: first)
                    continue
                }
                links[key] = target
            }
            switch type {
            case S_IFDIR:
                try makeDirectory(target, attributes)
                try await addChildren(of: host, at: target, links: &links)
            case S_IFREG:
                var source = try HostFileSource(path: host)
                try await addFile(target, attributes, size: UInt64(info.st_size), content: &source)
            case S_IFLNK:
                var buffer = [CChar](repeating: 0, count: 4097)
                let count = readlink(host, &buffer, 4096)
                guard count > 0 else { throw .invalidChange(path: host, problem: "cannot read the symlink: \(String(cString: strerror(errno)))") }
                let bytes = buffer[0..<count].map { UInt8(bitPattern: $0) }
                try await addSymlink(target, target: String(decoding: bytes, as: UTF8.self), attributes)
            case S_IFCHR:
                try addSpecial(target, kind: .characterDevice(major: Self.major(info.st_rdev), minor: Self.minor(info.st_rdev)), attributes)
            case S_IFBLK:
                try addSpecial(target, kind: .blockDevice(major: Self.major(info.st_rdev), minor: Self.minor(info.st_rdev)), attributes)
            case S_IFIFO:
                try addSpecial(target, kind: .fifo, attributes)
            case S_IFSOCK:
                try addSpecial(target, kind: .socket, attributes)
            default:
                throw .invalidChange(path: host, problem: "has an unknown file type \(type)")
            }
        }
    }

    /// glibc's dev_t encoding (gnu_dev_major/minor are macros Swift cannot call).
    static func major(_ device: UInt) -> UInt32 { UInt32(truncatingIfNeeded: ((device >> 8) & 0xFFF) | ((device >> 32) & ~0xFFF)) }
    static func minor(_ device: UInt) -> UInt32 { UInt32(truncatingIfNeeded: (device & 0xFF) | ((device >> 12) & ~0xFF)) }

    static func lstatus(_ path: String) throws(Ext4Error) -> stat {
        var info = stat()
        guard lstat(path, &info) == 0 else { throw .invalidChange(path: path, problem: "lstat: \(String(cString: strerror(errno)))") }
        return info
    }

    private func attributes(of path: String, _ info: stat) throws(Ext4Error) -> Ext4Attributes {
        Ext4Attributes(permissions: UInt16(info.st_mode & 0o7777), uid: info.st_uid, gid: info.st_gid,
                       modificationTime: Ext4Time(seconds: Int64(info.st_mtim.tv_sec), nanoseconds: UInt32(info.st_mtim.tv_nsec)),
                       xattrs: try Self.hostXAttrs(path))
    }

    /// The xattrs of `path` (not followed) that ext4 can keep.
    static func hostXAttrs(_ path: String) throws(Ext4Error) -> [Ext4XAttr] {
        let size = llistxattr(path, nil, 0)
        guard size > 0 else { return [] }
        var names = [CChar](repeating: 0, count: size)
        let got = llistxattr(path, &names, size)
        guard got > 0 else { return [] }
        var result: [Ext4XAttr] = []
        for raw in names[0..<got].split(separator: 0) {
            let name = String(decoding: raw.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let length = lgetxattr(path, name, nil, 0)
            guard length >= 0 else { continue }
            var value = [UInt8](repeating: 0, count: length)
            let read = lgetxattr(path, name, &value, length)
            guard read >= 0 else { continue }
            if let xattr = Ext4XAttr(fullName: name, value: Array(value[0..<read])) { result.append(xattr) }
        }
        return result
    }
}

/// A host file's bytes, read with read(2).
struct HostFileSource: Ext4ContentSource {
    private let handle: FileHandle

    init(path: String) throws(Ext4Error) {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw .invalidChange(path: path, problem: "cannot be opened for reading") }
        self.handle = handle
    }

    mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let count = Glibc.read(handle.fileDescriptor, buffer.baseAddress, buffer.count)
        guard count >= 0 else { throw Ext4Error.invalidChange(path: "host file", problem: "read: \(String(cString: strerror(errno)))") }
        return count
    }
}
