import Foundation
@testable import Images
import TestSupport
import Testing

/// A mutation fuzzer for everything that parses what a registry sends: manifests, indexes,
/// configs, and layer tarballs (unpacked for real). Each target runs for a bounded time
/// (VMFORK_FUZZ_SECONDS, default 2) and passes if no input crashed the process, every
/// refusal was an `ImageError`, and no unpack wrote outside its root.
/// Longer runs: `VMFORK_FUZZ_SECONDS=600 swift test --filter ImageParserFuzz`.
@Suite struct ImageParserFuzzTests {
    static let seconds = Double(ProcessInfo.processInfo.environment["VMFORK_FUZZ_SECONDS"] ?? "") ?? 2

    /// Byte mutations biased towards what breaks parsers: flipped bits, boundary values,
    /// JSON and tar punctuation, deletions and duplications.
    struct Mutator {
        var random: SplitMix64

        mutating func below(_ bound: Int) -> Int { Int(random.next() % UInt64(max(bound, 1))) }

        static let interesting: [UInt8] = [0, 0x20, 0x22, 0x2C, 0x2E, 0x2F, 0x30, 0x37, 0x38, 0x3A, 0x5B, 0x5D, 0x7B, 0x7D, 0x7F, 0x80, 0xFF]

        mutating func mutate(_ input: [UInt8]) -> [UInt8] {
            var bytes = input
            for _ in 0...below(4) where !bytes.isEmpty {
                let at = below(bytes.count)
                switch below(6) {
                case 0: bytes[at] ^= UInt8(1 << below(8))
                case 1, 2: bytes[at] = Self.interesting[below(Self.interesting.count)]
                case 3: bytes[at] = UInt8(truncatingIfNeeded: random.next())
                case 4: bytes.removeSubrange(at..<min(bytes.count, at + below(32) + 1))
                default:
                    let end = min(bytes.count, at + below(64) + 1)
                    bytes.insert(contentsOf: bytes[at..<end], at: below(bytes.count))
                }
            }
            return bytes
        }
    }

    private func fuzz(_ seed: [UInt8], label: String, minimumRuns: Int, body: ([UInt8]) throws -> Void) async {
        var mutator = Mutator(random: SplitMix64(seed: label.utf8.reduce(0xCBF2_9CE4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01B3 }))
        let deadline = ContinuousClock.now + .milliseconds(Int(Self.seconds * 1000))
        var runs = 0
        while ContinuousClock.now < deadline || runs < minimumRuns {
            let input = mutator.mutate(seed)
            do {
                try body(input)
            } catch is ImageError {
                // A refusal is the expected outcome for most mutations.
            } catch {
                Issue.record("\(label): a mutated input produced \(type(of: error)), not an ImageError: \(error)")
            }
            runs += 1
            if runs % 16 == 0 { await Task.yield() }
        }
    }

    static let digest = "sha256:" + String(repeating: "ab", count: 32)

    @Test func manifestParser() async {
        let seed = Array("""
            {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",\
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\(Self.digest)","size":493},\
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"\(Self.digest)","size":1084201}]}
            """.utf8)
        await fuzz(seed, label: "manifest", minimumRuns: 500) { bytes in
            _ = try ManifestKind.of(bytes, contentType: nil, what: "fuzz")
            _ = try Manifest.parse(bytes, what: "fuzz", contentType: nil)
        }
    }

    @Test func indexParser() async {
        let seed = Array("""
            {"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[\
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\(Self.digest)","size":349,"platform":{"architecture":"arm64","os":"linux"}},\
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\(Self.digest)","size":349,"platform":{"architecture":"amd64","os":"linux"}}]}
            """.utf8)
        await fuzz(seed, label: "index", minimumRuns: 500) { bytes in
            _ = try ImageIndex.parse(bytes, what: "fuzz").select(what: "fuzz")
        }
    }

    @Test func configParser() async {
        let seed = Array("""
            {"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/busybox"],"Cmd":["sh"],"Env":["PATH=/bin"],\
            "WorkingDir":"/","User":"0:0"},"rootfs":{"type":"layers","diff_ids":["\(Self.digest)"]}}
            """.utf8)
        await fuzz(seed, label: "config", minimumRuns: 500) { bytes in
            _ = try ImageConfig.parse(bytes, what: "fuzz", layerCount: 1)
        }
        await fuzz(Array(#"Bearer realm="https://a/token",service="b",scope="repository:x:pull""#.utf8), label: "challenge", minimumRuns: 500) { bytes in
            _ = AuthChallenge(parsing: String(decoding: bytes, as: UTF8.self))
        }
        await fuzz(Array("127.0.0.1:5000/tools/busybox:1.36@\(Self.digest)".utf8), label: "reference", minimumRuns: 500) { bytes in
            _ = try ImageReference(parsing: String(decoding: bytes, as: UTF8.self))
        }
    }

    /// Mutated tarballs unpacked for real; nothing may appear outside the root.
    @Test func tarReaderAndUnpacker() async throws {
        var tar = TarWriter()
        tar.add("bin", .directory, mode: 0o755)
        tar.add("bin/busybox", content: Array(repeating: 0x41, count: 700), mode: 0o755)
        tar.add("bin/sh", .symlink, link: "busybox")
        tar.add("bin/ash", .hardLink, link: "bin/busybox")
        tar.pax([("path", "etc/a-long-name-from-pax"), ("uid", "0")])
        tar.add("x", content: Array("pax\n".utf8))
        tar.longName("etc/gnu/long/name")
        tar.add("y", content: Array("gnu\n".utf8))
        tar.add("etc/.wh.gone")
        tar.add("opaque/.wh..wh..opq")
        let seed = tar.finished()
        var fixture = try UnpackFixture()
        defer { fixture.remove() }
        var runs = 0
        await fuzz(seed, label: "tar", minimumRuns: 100) { bytes in
            runs += 1
            if runs % 50 == 0 {
                fixture.remove()
                fixture = try UnpackFixture()
            }
            let unpacker = try LayerUnpacker(root: fixture.root, limits: UnpackLimits(maxFileBytes: 1 << 20, maxTotalBytes: 4 << 20, maxEntries: 1000))
            defer { #expect(fixture.outsideUntouched, "a mutated tar wrote outside the root") }
            try unpacker.apply(TarReader(source: MemorySource(bytes), layer: "fuzz"), layer: "fuzz")
        }
    }
}

/// Tar bytes from memory, in uneven pieces.
final class MemorySource: TarSource {
    private let bytes: [UInt8]
    private var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws(ImageError) -> Int {
        let count = min(buffer.count, bytes.count - offset, 777)
        guard count > 0 else { return 0 }
        bytes.withUnsafeBytes { raw in buffer.baseAddress!.copyMemory(from: raw.baseAddress! + offset, byteCount: count) }
        offset += count
        return count
    }
}
