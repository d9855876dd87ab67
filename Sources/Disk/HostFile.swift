import CShims
import Foundation
import HostSystem
import IOEngine

/// One file of a disk on the host (an extent, or a descriptor), open and registered with the
/// I/O engine. Opened with O_DIRECT where the file system allows it, so that disk I/O
/// bypasses the page cache like a real device; then every transfer is whole sectors into
/// page-aligned memory, which `readBytes`/`writeSectors` arrange for metadata.
///
/// `@unchecked Sendable`: every field is a `let`; its methods are only system calls and I/O-engine requests on
/// `descriptor` and `registered`, safe from any thread.
final class HostFile: @unchecked Sendable {
    static let sector = 512

    let path: String
    let writable: Bool
    let direct: Bool
    let engine: IOEngine
    let registered: RegisteredFile
    private let descriptor: FileDescriptor

    /// Opens an existing file.
    init(path: String, writable: Bool, direct wantDirect: Bool = true, engine: IOEngine) throws(DiskError) {
        self.path = path
        self.writable = writable
        self.engine = engine
        let flags = writable ? O_RDWR : O_RDONLY
        var opened: FileDescriptor?
        var isDirect = false
        if wantDirect {
            do throws(SystemError) {
                let candidate = try FileDescriptor.open(path, flags | CSHIMS_O_DIRECT)
                if Self.acceptsSectorDirectIO(candidate) {
                    opened = consume candidate
                    isDirect = true
                }
            } catch where error.errno == EINVAL {
                // This file system has no O_DIRECT (tmpfs): use the page cache.
            } catch {
                throw .system(error)
            }
        }
        if opened == nil {
            do { opened = try FileDescriptor.open(path, flags) } catch { throw .system(error) }
        }
        let fd = opened.take()!
        do { registered = try engine.register(fd) } catch { throw .io(error) }
        descriptor = fd
        direct = isDirect
    }

    deinit {
        engine.unregister(registered)
    }

    /// Makes a new file of `length` bytes (a hole until written), refusing to replace one.
    static func create(path: String, length: UInt64) throws(DiskError) {
        do {
            let fd = try FileDescriptor.open(path, O_RDWR | O_CREAT | O_EXCL)
            _ = try retryingSyscall("ftruncate(\(path), \(length))") { ftruncate(fd.rawValue, off_t(length)) }
            try fd.close()
        } catch { throw .system(error) }
    }

    /// Whether a 512-byte O_DIRECT read works here: a 4K-sector device refuses it with EINVAL,
    /// and the disk's metadata is laid out in 512-byte sectors.
    private static func acceptsSectorDirectIO(_ fd: borrowing FileDescriptor) -> Bool {
        let probe = UnsafeMutableRawPointer.allocate(byteCount: 1024, alignment: 4096)
        defer { probe.deallocate() }
        return pread(fd.rawValue, probe + 512, 512, 512) >= 0
    }

    func size() throws(DiskError) -> UInt64 {
        var info = stat()
        if fstat(descriptor.rawValue, &info) != 0 { throw .system(SystemError(call: "fstat(\(path))", errno: errno)) }
        return UInt64(info.st_size)
    }

    func truncate(to length: UInt64) throws(DiskError) {
        do {
            _ = try retryingSyscall("ftruncate(\(path), \(length))") { ftruncate(descriptor.rawValue, off_t(length)) }
        } catch { throw .system(error) }
    }

    /// Reads `count` bytes at `offset`; bytes past the end of the file read as zeros, and
    /// `available` says how many were really there.
    func readBytes(count: Int, at offset: UInt64) async throws(DiskError) -> (bytes: [UInt8], available: Int) {
        if count == 0 { return ([], 0) }
        let start = offset / UInt64(Self.sector) * UInt64(Self.sector)
        let lead = Int(offset - start)
        let span = (lead + count + Self.sector - 1) / Self.sector * Self.sector
        let buffer = engine.makeBuffer(count: span)
        let got: Int
        do { got = try await engine.read(registered, into: buffer.bytes, at: start) } catch { throw .io(error) }
        let available = max(0, min(count, got - lead))
        return (Array(UnsafeRawBufferPointer(start: buffer.base + lead, count: count)), available)
    }

    /// Reads exactly `count` bytes or names the structure that the file is too short for.
    func readExactly(count: Int, at offset: UInt64, structure: String) async throws(DiskError) -> [UInt8] {
        let (bytes, available) = try await readBytes(count: count, at: offset)
        guard available == count else {
            throw .malformed(file: path, field: structure, problem: "needs \(count) bytes at offset \(offset) but the file ends after \(available) of them")
        }
        return bytes
    }

    /// Writes whole sectors at a sector-aligned offset (metadata: headers, tables, descriptors).
    func writeSectors(_ bytes: [UInt8], at offset: UInt64) async throws(DiskError) {
        precondition(offset % UInt64(Self.sector) == 0 && bytes.count % Self.sector == 0, "metadata writes are whole sectors")
        let buffer = engine.makeBuffer(count: bytes.count)
        // unsafe: the IOBuffer was made bytes.count long, so the copy fits exactly.
        bytes.withUnsafeBytes { buffer.bytes.copyMemory(from: $0) }
        do { _ = try await engine.write(registered, from: UnsafeRawBufferPointer(buffer.bytes), at: offset) } catch { throw .io(error) }
    }

    func flush() async throws(DiskError) {
        do { try await engine.fdatasync(registered) } catch { throw .io(error) }
    }
}
