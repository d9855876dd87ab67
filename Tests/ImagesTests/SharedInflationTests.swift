import CShims
import Foundation
@testable import Images
import TestSupport
import Testing

/// A small layer is decoded once, into memory, for both the folder and the layer disk
/// (`LayerStream.inflate`): the same bytes and diff_id as streaming the blob; a layer over
/// the cap, or one that does not decode, is left to the stream (which tells what is wrong).
@Suite struct SharedInflationTests {
    /// A tar of `files` files of `size` bytes each, and its gzip, written into `folder`.
    static func layer(in folder: URL, files: Int, size: Int) throws -> (tar: [UInt8], blob: URL) {
        var tar = TarWriter()
        for index in 0..<files {
            tar.add("dir/file-\(index)", content: (0..<size).map { UInt8(truncatingIfNeeded: $0 * 31 + index) })
        }
        let bytes = tar.finished()
        let blob = folder.appendingPathComponent("layer-\(files)-\(size).gz")
        try Data(try gzipped(bytes)).write(to: blob)
        return (bytes, blob)
    }

    /// Everything `stream` yields, read in pieces of `piece` bytes.
    static func drain(_ stream: LayerStream, piece: Int = 1000) throws -> [UInt8] {
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: piece)
        while true {
            let count = try buffer.withUnsafeMutableBytes { try stream.read(into: $0) }
            if count == 0 { return result }
            result += buffer[0..<count]
        }
    }

    @Test func anInflatedLayerReadsAsTheStreamedOne() throws {
        let folder = try HostFacts.makeTemporaryFolder("inflate")
        defer { try? FileManager.default.removeItem(at: folder) }
        let (tar, blob) = try Self.layer(in: folder, files: 40, size: 9000)
        let streamed = try LayerStream(file: blob, layer: "0", maxBytes: 1 << 30)
        let streamedBytes = try Self.drain(streamed)
        let streamedDigest = streamed.finishDigest()
        #expect(streamedBytes == tar)

        let inflated = try #require(LayerStream.inflate(file: blob, layer: "0", maxBytes: 1 << 30, cap: 1 << 20))
        #expect(inflated.bytes == tar)
        #expect(inflated.digest == streamedDigest && inflated.digest == Digest.of(tar))
        let fromMemory = LayerStream(inflated: inflated, layer: "0")
        #expect(try Self.drain(fromMemory, piece: 777) == tar)
        #expect(fromMemory.finishDigest() == streamedDigest)

        // Two readers of one inflated layer (the folder's and the disk's) each read it whole.
        let first = LayerStream(inflated: inflated, layer: "0"), second = LayerStream(inflated: inflated, layer: "0")
        #expect(try Self.drain(first) == Self.drain(second))
    }

    @Test func layersOverTheCapOrThatDoNotDecodeAreLeftToTheStream() throws {
        let folder = try HostFacts.makeTemporaryFolder("inflate-cap")
        defer { try? FileManager.default.removeItem(at: folder) }
        let (tar, blob) = try Self.layer(in: folder, files: 40, size: 9000)
        // Over the cap, by the gzip trailer and by what decodes.
        #expect(LayerStream.inflate(file: blob, layer: "0", maxBytes: 1 << 30, cap: tar.count - 1) == nil)
        #expect(LayerStream.inflate(file: blob, layer: "0", maxBytes: Int64(tar.count - 1), cap: 1 << 30) == nil)
        #expect(LayerStream.inflate(file: blob, layer: "0", maxBytes: 1 << 30, cap: tar.count) != nil)
        // A trailer that understates the size: decoding stops at the cap.
        var lying = Array(try Data(contentsOf: blob))
        lying.replaceSubrange(lying.count - 4..<lying.count, with: [16, 0, 0, 0])
        let liar = folder.appendingPathComponent("liar.gz")
        try Data(lying).write(to: liar)
        #expect(LayerStream.inflate(file: liar, layer: "0", maxBytes: 1 << 30, cap: 64 << 10) == nil)
        // Cut short: nil here; the stream names the problem.
        let cut = folder.appendingPathComponent("cut.gz")
        let whole = Array(try Data(contentsOf: blob))
        try Data(whole.prefix(whole.count / 2)).write(to: cut)
        #expect(LayerStream.inflate(file: cut, layer: "0", maxBytes: 1 << 30, cap: 1 << 20) == nil)
        #expect(throws: ImageError.self) { _ = try Self.drain(try LayerStream(file: cut, layer: "0", maxBytes: 1 << 30)).count }
        // An uncompressed tar blob decodes as itself.
        let plain = folder.appendingPathComponent("plain.tar")
        try Data(tar).write(to: plain)
        #expect(LayerStream.inflate(file: plain, layer: "0", maxBytes: 1 << 30, cap: 1 << 20)?.bytes == tar)
    }

    /// libdeflate (whole members) and zlib (streaming) give the same tar and digest: one
    /// member, several members, zero padding after the last; and agree on what they refuse.
    @Test(.enabled(if: cshims_deflate_available() != 0, "libdeflate.so.0 (Debian libdeflate0) is not installed"))
    func libdeflateAndZlibDecodeAlike() throws {
        let folder = try HostFacts.makeTemporaryFolder("inflate-deflate")
        defer { try? FileManager.default.removeItem(at: folder) }
        let (tar, blob) = try Self.layer(in: folder, files: 60, size: 12_345)
        let member = Array(try Data(contentsOf: blob))
        let (tail, tailBlob) = try Self.layer(in: folder, files: 3, size: 100)
        let tailMember = Array(try Data(contentsOf: tailBlob))
        let cases: [(String, [UInt8], [UInt8])] = [
            ("one member", member, tar),
            ("two members", member + tailMember, tar + tail),
            ("zero padding", member + [UInt8](repeating: 0, count: 700), tar),
        ]
        for (name, bytes, expected) in cases {
            let file = folder.appendingPathComponent(name.replacingOccurrences(of: " ", with: "-") + ".gz")
            try Data(bytes).write(to: file)
            let whole = LayerStream.inflate(file: file, layer: "0", maxBytes: 1 << 30, cap: 4 << 20)
            let streamed = LayerStream.inflate(file: file, layer: "0", maxBytes: 1 << 30, cap: 4 << 20, wholeMembers: false)
            #expect(whole?.bytes == expected, "\(name): libdeflate")
            #expect(streamed?.bytes == expected, "\(name): zlib")
            #expect(whole?.digest == Digest.of(expected) && streamed?.digest == Digest.of(expected), "\(name)")
        }
        // A flipped byte inside the member: its CRC no longer holds; neither decodes it.
        var corrupt = member
        corrupt[member.count / 2] ^= 0x55
        let bad = folder.appendingPathComponent("corrupt.gz")
        try Data(corrupt).write(to: bad)
        #expect(LayerStream.inflate(file: bad, layer: "0", maxBytes: 1 << 30, cap: 4 << 20) == nil)
        #expect(LayerStream.inflate(file: bad, layer: "0", maxBytes: 1 << 30, cap: 4 << 20, wholeMembers: false) == nil)
        // Garbage after the member (not zeros): refused by both.
        let trailing = folder.appendingPathComponent("trailing.gz")
        try Data(member + Array("not gzip".utf8)).write(to: trailing)
        #expect(LayerStream.inflate(file: trailing, layer: "0", maxBytes: 1 << 30, cap: 4 << 20) == nil)
        #expect(LayerStream.inflate(file: trailing, layer: "0", maxBytes: 1 << 30, cap: 4 << 20, wholeMembers: false) == nil)
    }
}
