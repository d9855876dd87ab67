import Disk
import Foundation
import TestSupport
import Testing

/// A mutation fuzzer for everything that parses untrusted disk bytes: headers, descriptors,
/// grain directories and tables, stream markers and footers. Each target runs for a bounded
/// time (VMFORK_FUZZ_SECONDS, default 2) and passes if no input crashed the process and every
/// refusal was a `DiskError`. Longer runs: `VMFORK_FUZZ_SECONDS=600 swift test --filter ParserFuzz`.
@Suite struct ParserFuzzTests {
    static let seconds = Double(ProcessInfo.processInfo.environment["VMFORK_FUZZ_SECONDS"] ?? "") ?? 2

    /// Byte-level mutations biased towards the values that break parsers: zeros, all-ones,
    /// sign bits, off-by-ones, and integers just past a bound.
    struct Mutator {
        var random: SplitMix64

        mutating func next() -> UInt64 { random.next() }

        mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(max(bound, 1))) }

        static let interesting: [UInt64] = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x200, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFE, 0xFFFF_FFFF,
                                            1 << 40, (1 << 40) + 1, UInt64.max - 1, UInt64.max]

        mutating func mutate(_ input: [UInt8], within region: Range<Int>) -> [UInt8] {
            var bytes = input
            for _ in 0...below(4) {
                let at = region.lowerBound + below(region.count)
                switch below(6) {
                case 0:
                    bytes[at] ^= UInt8(1 << below(8))
                case 1:
                    bytes[at] = UInt8(truncatingIfNeeded: Self.interesting[below(Self.interesting.count)])
                case 2, 3:
                    let width = [2, 4, 8][below(3)]
                    let value = Self.interesting[below(Self.interesting.count)]
                    for index in 0..<width where at + index < bytes.count {
                        bytes[at + index] = UInt8(truncatingIfNeeded: value >> (8 * index))
                    }
                case 4:
                    bytes[at] = UInt8(truncatingIfNeeded: next())
                default:
                    bytes.removeSubrange(at..<min(bytes.count, at + below(64) + 1))
                    return bytes
                }
            }
            return bytes
        }
    }

    /// Runs `body` on mutations of `seed` until the time is up and at least `minimumRuns` ran
    /// (a loaded machine must not make the run trivially short).
    private func fuzz(_ seed: [UInt8], region: Range<Int>, label: String, minimumRuns: Int,
                      body: ([UInt8]) async throws -> Void) async throws {
        // Seeded from the label (FNV-1a), not hashValue, so that a run can be reproduced.
        var mutator = Mutator(random: SplitMix64(seed: label.utf8.reduce(0xCBF2_9CE4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01B3 }))
        let deadline = ContinuousClock.now + .milliseconds(Int(Self.seconds * 1000))
        var runs = 0
        while ContinuousClock.now < deadline || runs < minimumRuns {
            let input = mutator.mutate(seed, within: region)
            do {
                try await body(input)
            } catch is DiskError {
                // A refusal is the expected outcome for most mutations.
            } catch {
                Issue.record("\(label): a mutated input produced \(type(of: error)), not a DiskError: \(error)")
            }
            runs += 1
            // The synchronous parsers would otherwise hold a cooperative thread for the whole run.
            if runs % 16 == 0 { await Task.yield() }
        }
    }

    @Test func headerParser() async throws {
        var header = SparseExtentHeader(capacitySectors: 2048)
        header.descriptorOffset = 1
        header.descriptorSectors = 20
        header.redundantDirectoryOffset = 21
        header.directoryOffset = 30
        try await fuzz(header.serialized(), region: 0..<80, label: "header", minimumRuns: 200) { bytes in
            _ = try SparseExtentHeader.parse(bytes, file: "fuzz.vmdk")
        }
    }

    @Test func descriptorParser() async throws {
        let seed = Array(FormatTests.sampleDescriptor.utf8)
        try await fuzz(seed, region: 0..<seed.count, label: "descriptor", minimumRuns: 200) { bytes in
            _ = try Descriptor.parse(bytes, file: "fuzz.vmdk")
        }
    }

    /// Whole files: open the chain, read every byte, and check, on mutated metadata.
    @Test(arguments: ["sparse", "child", "stream"])
    func diskFiles(kind: String) async throws {
        let fixture = try DiskFixture("fuzz-\(kind)")
        let capacity: UInt64 = 256 << 10
        let data = DiskFixture.pattern(count: Int(capacity), seed: 17)
        let raw = try fixture.writeFile("data.raw", data)
        var target = "seed.vmdk"
        switch kind {
        case "stream":
            try fixture.qemuImg(["convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, fixture.path(target)])
        case "child":
            try await DiskConversion.convert(source: raw, sourceIsRaw: true, destination: fixture.path("base.vmdk"), format: .vmdk(.monolithicSparse), engine: fixture.engine)
            try await VMDKImage.createChild(at: fixture.path(target), parent: fixture.path("base.vmdk"), engine: fixture.engine)
            let child = try await VirtualDisk.open(path: fixture.path(target), writable: true, engine: fixture.engine)
            try await child.write([UInt8](repeating: 3, count: 4096), at: 8192)
        default:
            try await DiskConversion.convert(source: raw, sourceIsRaw: true, destination: fixture.path(target), format: .vmdk(.monolithicSparse), engine: fixture.engine)
        }
        let seed = try fixture.readFile(target)
        // Mutate the metadata: everything for a stream (markers are spread through it),
        // otherwise the header, descriptor, directories and tables before the first grain.
        let region = kind == "stream" ? 0..<seed.count : 0..<min(seed.count, 128 * 512)
        target = "mutated.vmdk"
        let engine = fixture.engine
        let path = fixture.path(target)
        try await fuzz(seed, region: region, label: kind, minimumRuns: 20) { bytes in
            try? FileManager.default.removeItem(atPath: path)
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            _ = await DiskCheck.check(path: path, engine: engine)
            let disk = try await VirtualDisk.open(path: path, engine: engine)
            _ = try await disk.read(count: Int(min(disk.capacityBytes, 4 << 20)), at: 0)
        }
    }
}
