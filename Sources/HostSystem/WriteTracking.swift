import CShims
#if canImport(Glibc)
import Glibc
#endif

/// The kernel's record of which pages of a range of this process's memory were written: the
/// range is registered with a userfaultfd for asynchronous write protection (Linux 6.7) and
/// write-protected once. From then on the first write to each page, by any writer (user code,
/// the kernel copying into it, KVM on a guest's behalf, another process through
/// process_vm_writev), lifts the page's protection in the kernel itself: no fault reaches
/// user space, and the page map names the page written (`PageMap.forEachWrittenPage`) until
/// it is protected again. Pages only read keep their protection.
///
/// Asking the page map for written pages costs a bit test per page table entry, where asking
/// for private pages (`PageMap.forEachPrivatePage`) looks up each present page's struct page
/// to tell a file's page from an anonymous one: for a pooled VM's restore, with ~500 pages of
/// its parent mapped, 35 µs of a 300 µs launch.
///
/// The userfaultfd takes user-mode faults only (UFFD_USER_MODE_ONLY), the mode an
/// unprivileged process may open and that the worker's seccomp filter allows; asynchronous
/// write protection is handled before that distinction, so writes from kernel mode are
/// recorded too. Its descriptor is kept for as long as the range is tracked: closing it
/// unregisters the range.
public final class WriteTracking: Sendable {
    private let descriptor: FileDescriptor
    /// The registered range: tracked from its start up to `protected` bytes, and beyond that
    /// (registered, never protected) every present page reads as written.
    public let start: UInt
    public let length: Int

    /// Registers [start, start + length) and write-protects its first `protected` bytes
    /// (pages not yet mapped too: a later fault maps them protected). Throws when this kernel
    /// or process cannot (no userfaultfd, not allowed, no asynchronous write protection) or
    /// the range cannot be registered (a mapping in it that userfaultfd does not take).
    public init(start: UInt, length: Int, protected: Int) throws(SystemError) {
        precondition(protected <= length && start % UInt(Self.pageSize) == 0 && length % Self.pageSize == 0 && protected % Self.pageSize == 0,
                     "write tracking covers whole pages of its range")
        let fd = cshims_uffd_open_write_tracking()
        guard fd >= 0 else { throw SystemError(call: "userfaultfd(UFFD_USER_MODE_ONLY) with UFFD_FEATURE_WP_ASYNC", errno: errno) }
        descriptor = FileDescriptor(adopting: fd)
        self.start = start
        self.length = length
        guard cshims_uffd_register_write_protection(fd, UInt64(start), UInt64(length)) == 0 else {
            throw SystemError(call: "ioctl(userfaultfd, UFFDIO_REGISTER, \(length) bytes)", errno: errno)
        }
        if protected > 0 {
            guard cshims_uffd_write_protect(fd, UInt64(start), UInt64(protected)) == 0 else {
                throw SystemError(call: "ioctl(userfaultfd, UFFDIO_WRITEPROTECT, \(protected) bytes)", errno: errno)
            }
        }
    }

    /// Why this process cannot track writes, or nil when it can: tracking is tried on a page
    /// of its own (for `vmfork doctor`, and tests that expect the engine to use it).
    public static func probe() -> SystemError? {
        let mapping: MappedMemory
        do { mapping = try MappedMemory(length: pageSize, flags: MAP_PRIVATE) } catch { return error }
        do {
            _ = try WriteTracking(start: UInt(bitPattern: mapping.base), length: pageSize, protected: pageSize)
            return nil
        } catch {
            return error
        }
    }

    private static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
}
