import Disk
import Foundation
import TestSupport
import Testing

/// Kills a writer (`vmfork disk write-loop`) with SIGKILL at random moments, then checks that
/// the disk passes our check and qemu-img check and holds every acknowledged write.
@Suite struct CrashConsistencyTests {
    /// What each sector should hold: the base pattern, a write of the schedule, or unknown
    /// (the write in flight at the kill, which may or may not have landed).
    enum SectorContent: Equatable {
        case base
        case written(seed: UInt64, number: Int)
        case unknown
    }

    @Test func killedWriterLeavesACheckableDiskWithEveryAcknowledgedWrite() async throws {
        let fixture = try DiskFixture("crash")
        let capacity = 4 << 20
        let base = DiskFixture.pattern(count: capacity, seed: 21)
        try await DiskConversion.convert(source: try fixture.writeFile("base.raw", base), sourceIsRaw: true, destination: fixture.path("base.vmdk"),
                                         format: .vmdk(.monolithicSparse), engine: fixture.engine)
        try await VMDKImage.createChild(at: fixture.path("child.vmdk"), parent: fixture.path("base.vmdk"), engine: fixture.engine)
        var model = [SectorContent](repeating: .base, count: capacity / 512)
        let vmfork = HostFacts.productsFolder.appendingPathComponent("vmfork").path
        var generator = SystemRandomNumberGenerator()
        var acknowledgedTotal = 0

        for round in 1...5 {
            let seed = UInt64(round) * 7919
            let log = fixture.path("round\(round).log")
            let writer = Process()
            writer.executableURL = URL(fileURLWithPath: vmfork)
            writer.arguments = ["disk", "write-loop", fixture.path("child.vmdk"), "--seed", "\(seed)", "--log", log]
            writer.standardError = FileHandle.nullDevice
            try writer.run()
            // Let it get going, then kill it wherever it is: mid-grain, mid-table, mid-flush.
            let deadline = Date().addingTimeInterval(10)
            while (try? Data(contentsOf: URL(fileURLWithPath: log)).count) ?? 0 == 0, Date() < deadline {
                try await Task.sleep(for: .milliseconds(5))
            }
            try await Task.sleep(for: .milliseconds(Int.random(in: 20...400, using: &generator)))
            kill(writer.processIdentifier, SIGKILL)
            writer.waitUntilExit()
            #expect(writer.terminationReason == .uncaughtSignal, "the writer died on its own: status \(writer.terminationStatus)")

            let lines = String(decoding: try Data(contentsOf: URL(fileURLWithPath: log)), as: UTF8.self).split(separator: "\n")
            let acknowledged = lines.compactMap { Int($0) }
            #expect(acknowledged == Array(0..<acknowledged.count), "the log holds each write number once, in order")
            acknowledgedTotal += acknowledged.count
            let schedule = WriteSchedule(seed: seed, capacityBytes: UInt64(capacity))
            for number in 0...acknowledged.count {
                let (first, sectors) = schedule.request(number)
                let content: SectorContent = number < acknowledged.count ? .written(seed: seed, number: number) : .unknown
                for sector in Int(first)..<Int(first) + sectors { model[sector] = content }
            }

            let report = await DiskCheck.check(path: fixture.path("child.vmdk"), engine: fixture.engine)
            #expect(report.errors.isEmpty, "round \(round): \(report.errors)")
            let qemuCheck = try HostFacts.run("/usr/bin/qemu-img", ["check", fixture.path("child.vmdk")])
            #expect(qemuCheck.status == 0, "round \(round): \(qemuCheck.stdout) \(qemuCheck.stderr)")
            try verify(try await fixture.readDisk("child.vmdk"), model: model, base: base, round: round)
        }
        #expect(acknowledgedTotal > 20, "the writer should have completed a fair number of writes")
        try verify(try fixture.qemuRaw("child.vmdk"), model: model, base: base, round: 0)
    }

    private func verify(_ disk: [UInt8], model: [SectorContent], base: [UInt8], round: Int) throws {
        var expected = [UInt8](repeating: 0, count: 512)
        var mismatches = 0
        for (sector, content) in model.enumerated() {
            switch content {
            case .unknown:
                continue
            case .base:
                expected.withUnsafeMutableBytes { $0.copyBytes(from: base[sector * 512..<(sector + 1) * 512]) }
            case .written(let seed, let number):
                expected.withUnsafeMutableBytes { WriteSchedule.fill($0, seed: seed, number: number, firstSector: UInt64(sector)) }
            }
            let equal = disk.withUnsafeBytes { actual in
                expected.withUnsafeBytes { memcmp(actual.baseAddress! + sector * 512, $0.baseAddress!, 512) == 0 }
            }
            if !equal { mismatches += 1 }
        }
        #expect(mismatches == 0, "round \(round): \(mismatches) sectors lost an acknowledged write")
    }
}
