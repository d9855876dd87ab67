import Foundation
@testable import Images
import TestSupport
import Testing

/// Hostile tarballs: each refused with an error naming the entry and what was wrong, and
/// nothing written outside the root.
@Suite struct HostileLayerTests {
    /// Unpacks and expects a refusal whose message holds `expected`.
    private func expectRefused(_ layers: [[UInt8]], _ expected: String, limits: UnpackLimits = UnpackLimits(),
                               sourceLocation: SourceLocation = #_sourceLocation) throws {
        let fixture = try UnpackFixture()
        defer { fixture.remove() }
        do {
            try fixture.unpack(layers, limits: limits)
            Issue.record("unpacked; expected a refusal with \"\(expected)\"", sourceLocation: sourceLocation)
        } catch let error as ImageError {
            #expect(error.description.contains(expected), "\(error)", sourceLocation: sourceLocation)
        }
        #expect(fixture.outsideUntouched, "something was written outside the root", sourceLocation: sourceLocation)
    }

    @Test func dotDotPathsAreRefused() throws {
        var tar = TarWriter()
        tar.add("../outside/pwned", content: Array("x".utf8))
        try expectRefused([tar.finished()], "entry \"../outside/pwned\": path \"../outside/pwned\" contains '..'")
        var hidden = TarWriter()
        hidden.add("a/b/../../../outside/pwned", content: [1])
        try expectRefused([hidden.finished()], "contains '..'")
    }

    @Test func absolutePathsAreRefused() throws {
        var tar = TarWriter()
        tar.add("/etc/pwned", content: Array("x".utf8))
        try expectRefused([tar.finished()], "is absolute")
    }

    @Test func writesThroughAnEscapingSymlinkAreRefused() throws {
        // Layer 1 plants a link to the outside folder; layer 2 writes "through" it.
        var lower = TarWriter()
        lower.add("escape", .symlink, link: "../outside")
        lower.add("abs-escape", .symlink, link: "/tmp")
        var upper = TarWriter()
        upper.add("escape/victim", content: Array("overwritten\n".utf8))
        try expectRefused([lower.finished(), upper.finished()], "its parent \"escape\" is a symlink or not a folder")
        var same = TarWriter()
        same.add("link", .symlink, link: "../outside")
        same.add("link/pwned", content: [1])
        try expectRefused([same.finished()], "its parent \"link\" is a symlink")
        var hard = TarWriter()
        hard.add("escape", .symlink, link: "../outside")
        hard.add("stolen", .hardLink, link: "escape/victim")
        try expectRefused([hard.finished()], "entry \"stolen\": its parent \"escape\" is a symlink")
        var dotdotLink = TarWriter()
        dotdotLink.add("stolen", .hardLink, link: "../outside/victim")
        try expectRefused([dotdotLink.finished()], "hard link target \"../outside/victim\" contains '..'")
    }

    @Test func deviceNodesAreRefused() throws {
        var tar = TarWriter()
        tar.add("dev/sda", .blockDevice, mode: 0o660)
        try expectRefused([tar.finished()], "entry \"dev/sda\": is a device node")
        var char = TarWriter()
        char.add("dev/mem", .characterDevice)
        try expectRefused([char.finished()], "device node")
    }

    @Test func aFileClaimingATerabyteIsRefusedBeforeWriting() throws {
        var tar = TarWriter()
        tar.add("huge.bin", claimedSize: 1 << 40)
        try expectRefused([tar.bytes], "entry \"huge.bin\": claims 1099511627776 bytes, over the")
        var total = TarWriter()
        for index in 0..<4 { total.add("part\(index)", content: [UInt8](repeating: 7, count: 3000)) }
        try expectRefused([total.finished()], "more than the 10000-byte limit", limits: UnpackLimits(maxFileBytes: 5000, maxTotalBytes: 10000))
    }

    @Test func aBombOfTinyFilesIsRefused() throws {
        var tar = TarWriter()
        for index in 0..<3000 { tar.add("f\(index)") }
        try expectRefused([tar.finished()], "more than 2000 entries", limits: UnpackLimits(maxEntries: 2000))
    }

    @Test func aGzipBombIsRefused() throws {
        // 64 MiB of zeros (an empty archive padded on and on): ~64 KiB of gzip, over a ~16 MiB stream limit.
        let layer = try gzipped([UInt8](repeating: 0, count: 64 << 20))
        #expect(layer.count < 1 << 20)
        try expectRefused([layer], "uncompresses to more than", limits: UnpackLimits(maxFileBytes: 1 << 30, maxTotalBytes: 1, maxEntries: 1))
    }

    @Test func corruptAndTruncatedArchivesAreNamed() throws {
        var tar = TarWriter()
        tar.add("file", content: [UInt8](repeating: 1, count: 2000))
        var badSum = tar.finished()
        badSum[0] ^= 0x20
        try expectRefused([badSum], "header checksum")
        try expectRefused([Array(tar.bytes.prefix(1024))], "ends inside the entry's content")
        // Cut inside the padding after the last content (an end right after it is whole: UnpackTests).
        try expectRefused([Array(tar.bytes.dropLast(10))], "ends inside the padding after the entry's content")
        let gz = try gzipped(tar.finished())
        try expectRefused([Array(gz.prefix(gz.count / 2))], "gzip stream is truncated")
        var sparse = TarWriter()
        sparse.add("holes", .sparse)
        try expectRefused([sparse.finished()], "entry type 'S' is not supported")
        var whiteout = TarWriter()
        whiteout.add(".wh..")
        try expectRefused([whiteout.finished()], "a whiteout naming")
    }
}
