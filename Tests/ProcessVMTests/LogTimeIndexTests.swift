import Foundation
import HostSystem
import TestSupport
@testable import ProcessVM
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A container's log time index (`LogTimeIndex`): what the engine writes as guest writes land,
/// and how it is read back, including what a killed or racing writer leaves.
struct LogTimeIndexTests {
    static func record(_ offset: UInt64, _ time: Int64) -> [UInt8] {
        withUnsafeBytes(of: (offset.littleEndian, time.littleEndian)) { Array($0) }
    }

    @Test func readBackTakesTheLastRecordAtOrBeforeEachByteAndIgnoresAPartialOne() {
        var bytes = Self.record(0, 1_000) + Self.record(10, 2_000) + Self.record(25, 3_000)
        bytes += [0xFF, 0xFF, 0xFF]  // a record cut short by a killed writer
        let times = LogTimes(bytes)
        #expect(times.count == 3)
        #expect(times.time(at: 0) == 1_000 && times.time(at: 9) == 1_000)
        #expect(times.time(at: 10) == 2_000 && times.time(at: 24) == 2_000)
        #expect(times.time(at: 25) == 3_000 && times.time(at: 1 << 40) == 3_000)
        // The rest of the cut record, when it comes, completes it.
        var growing = LogTimes(Array(bytes.prefix(20)))
        #expect(growing.count == 1)
        growing.append(bytes[20..<48])
        #expect(growing.count == 3 && growing.time(at: 30) == 3_000)
    }

    @Test func racingWritersRecordsAreOrderedAndAByteIsNeverEarlierThanARecordBeforeIt() {
        // Two processes: the later offset's record landed first; one record's time is earlier
        // than that of a record before it.
        let bytes = Self.record(0, 1_000) + Self.record(20, 3_000) + Self.record(10, 2_000) + Self.record(30, 2_500)
        let times = LogTimes(bytes)
        #expect(times.time(at: 15) == 2_000)
        #expect(times.time(at: 20) == 3_000)
        #expect(times.time(at: 35) == 3_000, "bytes after a record are written no earlier than it says")
        #expect(LogTimes([]).time(at: 0) == nil)
        #expect(LogTimes(Self.record(5, 7)).time(at: 4) == nil, "no record at or before byte 4")
    }

    @Test func writesWithinTheGranularityShareARecordAndASwitchOfStreamMakesOne() throws {
        let folder = try HostFacts.makeTemporaryFolder("log-times")
        defer { try? FileManager.default.removeItem(at: folder) }
        let timeline = LogTimeline()
        let output = try LogTimeIndex(path: folder.appendingPathComponent("stdout.times").path, stream: 1, timeline: timeline)
        let error = try LogTimeIndex(path: folder.appendingPathComponent("stderr.times").path, stream: 2, timeline: timeline)
        let log = open(folder.appendingPathComponent("stdout.log").path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        let errors = open(folder.appendingPathComponent("stderr.log").path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        defer { close(log); close(errors) }
        func write(_ fd: Int32, _ index: LogTimeIndex, _ text: String) {
            index.willWrite(to: fd)
            _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
        }
        // A burst: the first write makes a record; the rest follow within well under 1 ms
        // at most a few times (the granularity is per clock, not per write).
        let started = ContinuousClock.now
        for _ in 0..<100 { write(log, output, "x\n") }
        let burst = ContinuousClock.now - started
        write(errors, error, "e\n")
        write(log, output, "y\n")
        let outputTimes = LogTimes(path: folder.appendingPathComponent("stdout.times").path)
        let errorTimes = LogTimes(path: folder.appendingPathComponent("stderr.times").path)
        // At most one record per started millisecond of the burst, plus the switch back.
        let millisecondsOfBurst = Int(burst.components.seconds * 1000 + burst.components.attoseconds / 1_000_000_000_000_000) + 1
        #expect(outputTimes.count >= 2 && outputTimes.count <= millisecondsOfBurst + 2, "\(outputTimes.count) records, burst \(burst)")
        #expect(errorTimes.count == 1)
        // The write after stderr's has a record of its own, at its offset, later than stderr's.
        let yTime = try #require(outputTimes.time(at: 200))
        let eTime = try #require(errorTimes.time(at: 0))
        #expect(yTime > eTime)
        #expect(try #require(outputTimes.time(at: 0)) <= eTime)
    }
}
