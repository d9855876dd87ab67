import Foundation
@testable import Images
import TestSupport

/// A sandbox folder holding the unpack root and a sibling "outside" folder that no layer
/// may touch, and a way to unpack layers (tar bytes, optionally gzip'ed) into the root.
struct UnpackFixture {
    let sandbox: URL
    var root: URL { sandbox.appendingPathComponent("root") }
    var outside: URL { sandbox.appendingPathComponent("outside") }

    init() throws {
        sandbox = try HostFacts.makeTemporaryFolder("unpack")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: outside, withIntermediateDirectories: true)
        try "untouched\n".write(to: outside.appendingPathComponent("victim"), atomically: true, encoding: .utf8)
    }

    /// Unpacks the layers in order; returns each layer's diff_id.
    @discardableResult
    func unpack(_ layers: [[UInt8]], limits: UnpackLimits = UnpackLimits()) throws -> [Digest] {
        let unpacker = try LayerUnpacker(root: root, limits: limits)
        var digests: [Digest] = []
        for (index, layer) in layers.enumerated() {
            let file = sandbox.appendingPathComponent("layer\(index).tar")
            try Data(layer).write(to: file)
            let stream = try LayerStream(file: file, layer: "\(index)", maxBytes: limits.maxStreamBytes)
            try unpacker.apply(TarReader(source: stream, layer: "\(index)"), layer: "\(index)")
            digests.append(stream.finishDigest())
        }
        return digests
    }

    /// Everything in the sandbox outside the root is as the fixture made it.
    var outsideUntouched: Bool {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: outside.path)) ?? []
        let sandboxNames = Set((try? FileManager.default.contentsOfDirectory(atPath: sandbox.path)) ?? []).filter { !$0.hasPrefix("layer") }
        return names == ["victim"] && sandboxNames == ["root", "outside"]
            && (try? String(contentsOf: outside.appendingPathComponent("victim"), encoding: .utf8)) == "untouched\n"
    }

    func text(_ path: String) -> String? { try? String(contentsOf: root.appendingPathComponent(path), encoding: .utf8) }

    func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(root.appendingPathComponent(path).path, &info) == 0
    }

    func remove() { try? FileManager.default.removeItem(at: sandbox) }
}

/// gzip of bytes, by the system's gzip (a peer implementation, not ours).
func gzipped(_ bytes: [UInt8]) throws -> [UInt8] {
    let folder = try HostFacts.makeTemporaryFolder("gzip")
    defer { try? FileManager.default.removeItem(at: folder) }
    let file = folder.appendingPathComponent("data")
    try Data(bytes).write(to: file)
    _ = try HostFacts.run("/bin/gzip", ["-n", file.path])
    return Array(try Data(contentsOf: folder.appendingPathComponent("data.gz")))
}
