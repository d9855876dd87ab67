import Disk
import Foundation
import IOEngine
import TestSupport
import Testing

/// A temporary datastore folder, an I/O engine, and the qemu peer tools, for one test.
final class DiskFixture: Sendable {
    let folder: URL
    let engine: IOEngine

    init(_ label: String) throws {
        folder = try HostFacts.makeTemporaryFolder(label)
        engine = try IOEngine()
    }

    deinit {
        try? FileManager.default.removeItem(at: folder)
    }

    func path(_ name: String) -> String { folder.appendingPathComponent(name).path }

    /// Runs qemu-img (Debian's qemu-utils) and fails the test, showing its output, on a non-zero exit.
    @discardableResult
    func qemuImg(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        try tool("/usr/bin/qemu-img", arguments, sourceLocation: sourceLocation)
    }

    @discardableResult
    func qemuIO(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        try tool("/usr/bin/qemu-io", arguments, sourceLocation: sourceLocation)
    }

    private func tool(_ executable: String, _ arguments: [String], sourceLocation: SourceLocation) throws -> String {
        let result = try HostFacts.run(executable, arguments)
        #expect(result.status == 0, "\(executable) \(arguments.joined(separator: " ")): \(result.stdout) \(result.stderr)", sourceLocation: sourceLocation)
        return result.stdout
    }

    /// `count` bytes of a deterministic pattern with zero stretches (every third 64 KiB), so
    /// that sparse files stay sparse.
    static func pattern(count: Int, seed: UInt64) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var state = seed
        bytes.withUnsafeMutableBytes { raw in
            var offset = 0
            while offset + 8 <= count {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                if (offset / 65536) % 3 != 1 { raw.storeBytes(of: state, toByteOffset: offset, as: UInt64.self) }
                offset += 8
            }
        }
        return bytes
    }

    func writeFile(_ name: String, _ bytes: [UInt8]) throws -> String {
        let target = path(name)
        try Data(bytes).write(to: URL(fileURLWithPath: target))
        return target
    }

    func readFile(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path(name))))
    }

    /// Everything the disk at `name` reads as, through our chain code.
    func readDisk(_ name: String) async throws -> [UInt8] {
        let disk = try await VirtualDisk.open(path: path(name), engine: engine)
        return try await disk.read(count: Int(disk.capacityBytes), at: 0)
    }

    /// What qemu-img reads the disk at `name` as.
    func qemuRaw(_ name: String) throws -> [UInt8] {
        let raw = path(name + ".qemu.raw")
        try? FileManager.default.removeItem(atPath: raw)
        try qemuImg(["convert", "-O", "raw", path(name), raw])
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: raw)))
    }
}
