import CShims
internal import CShims.Uring
import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// One io_uring instance: a submission and completion queue pair owned by one I/O thread.
/// The ring is torn down exactly once, when the value goes away.
///
/// `@unchecked Sendable`: `ring` is a `let`; its queues are used by the owning I/O thread alone (`RingWorker`), and other
/// threads only make register calls (`updateRegisteredFile`, `updateRegisteredBuffer`), which read the ring's fd alone.
public final class IOUring: @unchecked Sendable {
    let ring: UnsafeMutablePointer<io_uring>

    /// Sets up a ring with room for `entries` submissions.
    public init(entries: UInt32 = 64, flags: UInt32 = 0) throws(IOUringError) {
        // Set up into a local first: a class init that throws after its stored properties
        // are set still runs deinit, which would tear the ring down a second time.
        let candidate = UnsafeMutablePointer<io_uring>.allocate(capacity: 1)
        candidate.initialize(to: io_uring())
        let result = io_uring_queue_init(entries, candidate, flags)
        if result < 0 {
            candidate.deallocate()
            throw .unavailable(errno: -result, hint: IOUringError.setupHint(errno: -result))
        }
        ring = candidate
    }

    deinit {
        io_uring_queue_exit(ring)
        ring.deallocate()
    }

    /// The opcodes the I/O path needs, with their names for error messages.
    public static let requiredOpcodes: [(name: String, code: Int32)] = [
        ("IORING_OP_READ", Int32(IORING_OP_READ.rawValue)),
        ("IORING_OP_WRITE", Int32(IORING_OP_WRITE.rawValue)),
        ("IORING_OP_READ_FIXED", Int32(IORING_OP_READ_FIXED.rawValue)),
        ("IORING_OP_WRITE_FIXED", Int32(IORING_OP_WRITE_FIXED.rawValue)),
        ("IORING_OP_FSYNC", Int32(IORING_OP_FSYNC.rawValue)),
    ]

    /// Asks the kernel which of `requiredOpcodes` it supports.
    public func supportedOpcodes() throws(IOUringError) -> [(name: String, supported: Bool)] {
        guard let probe = io_uring_get_probe_ring(ring) else {
            throw .system(SystemError(call: "io_uring_register(IORING_REGISTER_PROBE)", errno: errno))
        }
        defer { io_uring_free_probe(probe) }
        return Self.requiredOpcodes.map { ($0.name, cshims_uring_opcode_supported(probe, $0.code) != 0) }
    }

    /// Reserves `files` empty slots for registered files and `buffers` for registered buffers,
    /// so that descriptors and buffers can come and go one at a time while the ring runs.
    public func reserveRegistrationTables(files: UInt32, buffers: UInt32) throws(IOUringError) {
        let fileResult = io_uring_register_files_sparse(ring, files)
        if fileResult < 0 {
            throw .system(SystemError(call: "io_uring_register_files_sparse(\(files))", errno: -fileResult))
        }
        let bufferResult = io_uring_register_buffers_sparse(ring, buffers)
        if bufferResult < 0 {
            throw .system(SystemError(call: "io_uring_register_buffers_sparse(\(buffers))", errno: -bufferResult))
        }
    }

    /// Puts `fd` (or -1 to empty the slot) at `slot` of the registered-file table.
    public func updateRegisteredFile(slot: UInt32, fd: Int32) throws(IOUringError) {
        let result = cshims_uring_update_file(ring, slot, fd)
        if result < 0 {
            throw .system(SystemError(call: "io_uring_register_files_update(slot \(slot))", errno: -result))
        }
    }

    /// Puts a buffer (or nil to empty the slot) at `slot` of the registered-buffer table.
    public func updateRegisteredBuffer(slot: UInt32, base: UnsafeMutableRawPointer?, length: Int) throws(IOUringError) {
        let result = cshims_uring_update_buffer(ring, slot, base, length)
        if result < 0 {
            throw .system(SystemError(call: "io_uring_register_buffers_update_tag(slot \(slot), \(length) bytes)", errno: -result))
        }
    }
}
