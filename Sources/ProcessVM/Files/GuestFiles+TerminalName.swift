import CShims
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// The name a container's terminal has inside it, for `ttyname` (the C library's, as `tty`,
/// `ps` and shells' prompts use it): descriptors open on the terminal stat as the character
/// device /dev/pts/0, `/proc/self/fd/N` of such a descriptor reads as that path, and the path
/// stats as the same device, which is how the C library checks what the link said. Nothing
/// else of /proc or /dev/pts exists in the guest. /dev/tty and /dev/pts/0 open the terminal.
extension GuestFiles {
    /// The terminal's path in the guest.
    static let terminalPath = Array("/dev/pts/0".utf8)

    /// Whether (dirfd, path) names the terminal: the terminal's path while one is installed,
    /// /proc/self/fd/N of a descriptor open on it when the link is followed, or an empty path
    /// with AT_EMPTY_PATH on such a descriptor.
    /// Every stat asks, so a path is compared in place, not copied, unless it could be a name.
    func namesTerminal(dirfd: Int32, path: UnsafePointer<CChar>, emptyPathAllowed: Bool, followsLink: Bool) -> Bool {
        if path.pointee == 0 { return emptyPathAllowed && terminal(of: dirfd) != nil }
        if followsLink, terminalLink(path) != nil { return true }
        return Self.matches(path, Self.terminalPath) && terminalFile != nil
    }

    /// The open file of the terminal, if a descriptor is open on one.
    private var terminalFile: OpenFile? { slots.lazy.compactMap { $0?.file }.first { $0.terminal != nil } }

    /// Whether the guest's C string `path` is `name`, repeated slashes aside.
    private static func matches(_ path: UnsafePointer<CChar>, _ name: [UInt8]) -> Bool {
        var index = 0
        var at = path
        while at.pointee != 0 {
            let byte = UInt8(bitPattern: at.pointee)
            at += 1
            if byte == GuestPath.slash, index > 0, name[index - 1] == GuestPath.slash { continue }
            guard index < name.count, name[index] == byte else { return false }
            index += 1
        }
        return index == name.count
    }

    /// What readlink of `path` gives when it is /proc/self/fd/N (or /proc/thread-self/fd/N)
    /// of a descriptor open on the terminal; nil for any other path.
    func terminalLink(_ path: UnsafePointer<CChar>) -> [UInt8]? {
        guard strncmp(path, "/proc/", 6) == 0, let bytes = try? GuestPath.bytes(of: path) else { return nil }
        let components = bytes.split(separator: GuestPath.slash, omittingEmptySubsequences: true)
        guard bytes.first == GuestPath.slash, components.count == 4, components[0].elementsEqual("proc".utf8),
              components[1].elementsEqual("self".utf8) || components[1].elementsEqual("thread-self".utf8),
              components[2].elementsEqual("fd".utf8),
              components[3].allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }), components[3].count <= 9,
              let fd = Int32(String(decoding: components[3], as: UTF8.self)), terminal(of: fd) != nil else { return nil }
        return Self.terminalPath
    }

    /// The open file an open(2) of /dev/tty or /dev/pts/0 gets: the terminal's own, shared as
    /// dup shares it (one open file description: its status flags are the terminal's other
    /// descriptors' too, where Linux would make a new one). nil when `path` is neither name;
    /// ENXIO for /dev/tty without a terminal, as Linux answers a process with no controlling
    /// terminal (/dev/pts/0 then is looked up as any path, and is not there).
    func terminalToOpen(_ path: UnsafePointer<CChar>, flags: Int32) throws(SystemError) -> OpenFile? {
        let isTTY = Self.matches(path, Self.controllingTerminalPath)
        guard isTTY || Self.matches(path, Self.terminalPath) else { return nil }
        guard let file = terminalFile else {
            if isTTY { throw SystemError(call: "open(/dev/tty)", errno: ENXIO) }
            return nil
        }
        if flags & O_DIRECTORY != 0 { throw SystemError(call: "open(terminal)", errno: ENOTDIR) }
        return file
    }

    /// The controlling terminal's name, whatever it is.
    static let controllingTerminalPath = Array("/dev/tty".utf8)
}

extension GuestStatBytes {
    /// Linux's numbers for the first pseudo-terminal: major 136 (UNIX98 PTY slaves), minor 0,
    /// inode 3 on its devpts mount, mode crw--w---- owned by root and the tty group (5).
    private static let terminalDevice = encodedDevice(136, 0)
    private static let devptsDevice: UInt64 = encodedDevice(0, 25)
    private static let terminalInode: UInt64 = 3
    /// S_IFCHR (0o020000) | rw--w----.
    private static let terminalMode: UInt32 = 0o020620
    private static let ttyGroup: UInt32 = 5

    /// struct stat of the terminal (144 bytes).
    static func terminal(into buffer: UnsafeMutableRawBufferPointer) {
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        buffer.storeBytes(of: devptsDevice, toByteOffset: 0, as: UInt64.self)
        buffer.storeBytes(of: terminalInode, toByteOffset: 8, as: UInt64.self)
        buffer.storeBytes(of: UInt64(1), toByteOffset: 16, as: UInt64.self)
        buffer.storeBytes(of: terminalMode, toByteOffset: 24, as: UInt32.self)
        buffer.storeBytes(of: ttyGroup, toByteOffset: 32, as: UInt32.self)
        buffer.storeBytes(of: terminalDevice, toByteOffset: 40, as: UInt64.self)
        buffer.storeBytes(of: UInt64(1024), toByteOffset: 56, as: UInt64.self)
    }

    /// struct statx of the terminal (256 bytes).
    static func terminalStatx(into buffer: UnsafeMutableRawBufferPointer) {
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        buffer.storeBytes(of: basicStats, toByteOffset: 0, as: UInt32.self)
        buffer.storeBytes(of: UInt32(1024), toByteOffset: 4, as: UInt32.self)
        buffer.storeBytes(of: UInt32(1), toByteOffset: 16, as: UInt32.self)
        buffer.storeBytes(of: ttyGroup, toByteOffset: 24, as: UInt32.self)
        buffer.storeBytes(of: UInt16(truncatingIfNeeded: terminalMode), toByteOffset: 28, as: UInt16.self)
        buffer.storeBytes(of: terminalInode, toByteOffset: 32, as: UInt64.self)
        buffer.storeBytes(of: UInt32(136), toByteOffset: 128, as: UInt32.self)
        buffer.storeBytes(of: UInt32(0), toByteOffset: 132, as: UInt32.self)
        buffer.storeBytes(of: UInt32(0), toByteOffset: 136, as: UInt32.self)
        buffer.storeBytes(of: UInt32(25), toByteOffset: 140, as: UInt32.self)
    }
}
