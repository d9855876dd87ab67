import CShims
#if canImport(Glibc)
import Glibc
#endif

/// A region of this process's address space from mmap(2), unmapped exactly once when the
/// value goes away.
///
/// `@unchecked Sendable`: both fields are `let`s and the one owner (~Copyable) unmaps it once; writes to the bytes at
/// `base` are the owner's to order.
public struct MappedMemory: ~Copyable, @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let length: Int

    /// Maps `length` bytes. With `fd` nil the mapping is anonymous.
    public init(length: Int, protection: Int32 = PROT_READ | PROT_WRITE, flags: Int32, fd: Int32 = -1, offset: Int = 0) throws(SystemError) {
        let flags = fd < 0 ? flags | MAP_ANONYMOUS : flags
        guard let pointer = mmap(nil, length, protection, flags, fd, off_t(offset)), pointer != MAP_FAILED else {
            throw SystemError(call: "mmap(\(length) bytes)", errno: errno)
        }
        self.base = pointer
        self.length = length
    }

    deinit {
        munmap(base, length)
    }
}

/// Anonymous memory backed by a memfd, so that it can be mapped again elsewhere (copy-on-write
/// into a forked VM) and measured by the kernel.
public func makeMemfd(name: String, size: Int) throws(SystemError) -> FileDescriptor {
    let fd = try retryingSyscall("memfd_create(\(name))") { cshims_memfd_create(name) }
    let owned = FileDescriptor(adopting: fd)
    _ = try retryingSyscall("ftruncate(memfd \(name), \(size))") { ftruncate(owned.rawValue, off_t(size)) }
    return owned
}
