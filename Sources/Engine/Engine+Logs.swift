import Foundation
import ProcessVM

/// What a logs call asks for: which stream, from which byte, and — when a time filter or
/// stamps are asked for — lines with the times their first bytes were written
/// (`LogTimeIndex`: at most 1 ms early).
public struct LogQuery: Sendable {
    public var stream: LogStream
    /// A byte offset in each log file: what comes before it is not read.
    public var since: Int
    /// Only lines written at or after this time (seconds since 1970).
    /// The latest time a filter may name: 9e9 seconds since 1970 (the year 2255), inside the
    /// nanoseconds a 64-bit number holds (up to 2262).
    public static let latestTime: Double = 9e9
    public var sinceTime: Double?
    /// Only lines written at or before this time (seconds since 1970).
    public var untilTime: Double?
    /// Each line prefixed with its time, RFC 3339 in UTC with nanoseconds, and a space.
    public var timestamps: Bool
    /// Goes on while the container runs; ends once it has ended and everything is sent.
    public var follow: Bool

    public init(stream: LogStream = .all, since: Int = 0, sinceTime: Double? = nil, untilTime: Double? = nil, timestamps: Bool = false,
                follow: Bool = false) {
        self.stream = stream
        self.since = since
        self.sinceTime = sinceTime
        self.untilTime = untilTime
        self.timestamps = timestamps
        self.follow = follow
    }

    /// True when the answer is lines with times rather than the bytes as they are.
    var byLine: Bool { timestamps || sinceTime != nil || untilTime != nil }
}

extension Engine {
    // MARK: Logs

    /// The container's output: `stream` from byte `since` of each file; with `follow`, goes
    /// on while the container runs and ends once it has ended and everything is sent.
    public func logs(_ idOrName: String, stream: LogStream = .all, since: Int = 0, follow: Bool = false) throws -> AsyncThrowingStream<Data, Error> {
        try logs(idOrName, LogQuery(stream: stream, since: since, follow: follow))
    }

    /// The container's output as `query` asks. The bytes as they are, each file's in turn as
    /// it comes; or with a time filter or stamps, whole lines, stdout's and stderr's merged in
    /// the order they were written (a line not yet ended is held while the container runs).
    public func logs(_ idOrName: String, _ query: LogQuery) throws -> AsyncThrowingStream<Data, Error> {
        guard query.since >= 0 else { throw EngineError.invalid("since", "since \(query.since) is negative") }
        let now = Date().timeIntervalSince1970
        for (name, value) in [("sinceTime", query.sinceTime), ("untilTime", query.untilTime)] {
            guard let value else { continue }
            guard value.isFinite, value >= 0 else { throw EngineError.invalid(name, "\(name) \(value) is not a time: seconds since 1970, 0 or more") }
            guard value <= LogQuery.latestTime else {
                throw EngineError.invalid(name, "\(name) \(value) is too far ahead: at most \(LogQuery.latestTime) seconds since 1970 (times are kept in nanoseconds, as 64-bit numbers)")
            }
        }
        if let sinceTime = query.sinceTime, sinceTime > now {
            throw EngineError.invalid("sinceTime", "sinceTime \(sinceTime) is in the future (now is \(now))")
        }
        if let sinceTime = query.sinceTime, let untilTime = query.untilTime, untilTime < sinceTime {
            throw EngineError.invalid("untilTime", "untilTime \(untilTime) is before sinceTime \(sinceTime)")
        }
        let container = try container(idOrName)
        let streams: [LogStream] = query.stream == .all ? [.stdout, .stderr] : [query.stream]
        let feed = eventFeed
        if query.byLine {
            let info = container.info
            let fallback = Self.nanoseconds(info.startedAt ?? info.createdAt)
            let readers = streams.map { stream in
                LogLineReader(log: ContainerFolder.path(ContainerFolder.logFile(stream), in: container.logFolder),
                              times: ContainerFolder.path(ContainerFolder.timesFile(stream), in: container.logFolder),
                              from: query.since, fallbackTime: fallback)
            }
            return Self.lines(readers, query, ended: { container.exit != nil }, closed: { feed.isClosed })
        }
        let paths = streams.map { ContainerFolder.path(ContainerFolder.logFile($0), in: container.logFolder) }
        let (since, follow) = (query.since, query.follow)
        return AsyncThrowingStream { continuation in
            let task = Task {
                var offsets = paths.map { _ in since }
                while !Task.isCancelled {
                    let ended = container.exit != nil
                    var sent = false
                    for (index, path) in paths.enumerated() {
                        let chunk = Self.read(path, from: offsets[index])
                        if !chunk.isEmpty {
                            offsets[index] += chunk.count
                            continuation.yield(chunk)
                            sent = true
                        }
                    }
                    if !follow || (ended && !sent) || feed.isClosed && !sent { break }
                    if !sent { try? await Task.sleep(for: .milliseconds(20)) }
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// The lines of `readers` (one per stream), merged by time, filtered and stamped as
    /// `query` asks. Without follow the logs are read as far as they go now.
    private static func lines(_ readers: [LogLineReader], _ query: LogQuery, ended: @escaping @Sendable () -> Bool,
                              closed: @escaping @Sendable () -> Bool) -> AsyncThrowingStream<Data, Error> {
        let since = query.sinceTime.map(nanoseconds)
        let until = query.untilTime.map(nanoseconds)
        let (timestamps, follow) = (query.timestamps, query.follow)
        let held = UncheckedReaders(readers)
        return AsyncThrowingStream { continuation in
            let task = Task {
                let readers = held.readers
                var queues: [[LogLine]] = readers.map { _ in [] }
                var heads = readers.map { _ in 0 }
                while !Task.isCancelled {
                    let ending = !follow || ended() || closed()
                    var out = Data()
                    var moved = false
                    // Readers found at the end of their log in this round.
                    var dry = readers.map { _ in false }
                    // Merge: take the earliest head line while every reader with more to come has
                    // one; a reader that has nothing now does not hold the others back.
                    while true {
                        for index in readers.indices where heads[index] == queues[index].count && !dry[index] {
                            queues[index] = readers[index].nextLines(flushingPartial: ending)
                            heads[index] = 0
                            dry[index] = queues[index].isEmpty
                        }
                        let ready = readers.indices.filter { heads[$0] < queues[$0].count }
                        guard let first = ready.min(by: { queues[$0][heads[$0]].time < queues[$1][heads[$1]].time }) else { break }
                        let line = queues[first][heads[first]]
                        heads[first] += 1
                        moved = true
                        if let since, line.time < since { continue }
                        if let until, line.time > until { continue }
                        if timestamps { out.append(contentsOf: LogStamp.format(line.time).utf8 + [0x20]) }
                        out.append(line.bytes)
                        if out.count >= 1 << 16 {
                            continuation.yield(out)
                            out = Data()
                        }
                    }
                    if !out.isEmpty { continuation.yield(out) }
                    if ending && !moved { break }
                    if !moved { try? await Task.sleep(for: .milliseconds(20)) }
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// `seconds` (checked to lie in 0...LogQuery.latestTime) in nanoseconds; clamped, so that
    /// no value can trap the conversion.
    static func nanoseconds(_ seconds: Double) -> Int64 {
        guard seconds.isFinite else { return seconds > 0 ? Int64.max : 0 }
        return Int64(exactly: (min(max(seconds, 0), LogQuery.latestTime) * 1e9).rounded(.down)) ?? Int64.max
    }

    /// Up to 1 MiB of a log file from `offset` (empty when there is nothing new or no file).
    static func read(_ path: String, from offset: Int) -> Data {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return Data() }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        let count = pread(fd, &buffer, buffer.count, off_t(offset))
        return count > 0 ? Data(buffer[0..<count]) : Data()
    }
}

/// One line of a log: its bytes (with the newline, when it has one) and the time its first
/// byte was written.
struct LogLine {
    let time: Int64
    let bytes: Data
}

/// Holds the readers for the one task that uses them.
private struct UncheckedReaders: @unchecked Sendable {
    // @unchecked: handed once to the task that alone reads and mutates them.
    let readers: [LogLineReader]
    init(_ readers: [LogLineReader]) { self.readers = readers }
}

/// Reads one log file as lines with times, from its time index (read as far as the log is,
/// after the log: a record is written before the bytes it times).
final class LogLineReader {
    let log: String
    let timesPath: String
    private var offset: Int
    /// The start of the line not ended yet, and its bytes so far.
    private var partialStart: Int
    private var partial = Data()
    private var times = LogTimes()
    /// How far the time index has been read.
    private var timesRead = 0
    /// For bytes before the index's first record (a log written before indexes, or an
    /// index lost): the container's start.
    private let fallbackTime: Int64
    /// Longest line held whole; a longer one is cut at this length.
    static let longestLine = 1 << 20

    init(log: String, times: String, from offset: Int, fallbackTime: Int64) {
        self.log = log
        self.timesPath = times
        self.offset = offset
        self.partialStart = offset
        self.fallbackTime = fallbackTime
    }

    /// The complete lines of what the log has next (reading on until there is one, or to the
    /// log's end, or a cut line); with `flushingPartial`, at the log's end the line not ended
    /// yet too.
    func nextLines(flushingPartial: Bool) -> [LogLine] {
        var lines: [LogLine] = []
        while lines.isEmpty {
            let chunk = Engine.read(log, from: offset)
            if !chunk.isEmpty { timesRead = times.read(timesPath, from: timesRead) }
            offset += chunk.count
            partial.append(chunk)
            var start = partial.startIndex
            while let newline = partial[start...].firstIndex(of: 0x0A) {
                lines.append(line(partial[start...newline], at: partialStart + (start - partial.startIndex)))
                start = newline + 1
            }
            partialStart += start - partial.startIndex
            partial = Data(partial[start...])
            if !partial.isEmpty, (chunk.isEmpty && flushingPartial) || partial.count >= Self.longestLine {
                lines.append(line(partial, at: partialStart))
                partialStart += partial.count
                partial = Data()
            }
            if chunk.isEmpty { break }
        }
        return lines
    }

    private func line(_ bytes: Data, at start: Int) -> LogLine {
        LogLine(time: times.time(at: UInt64(start)) ?? fallbackTime, bytes: Data(bytes))
    }
}

/// A log line's stamp: RFC 3339 in UTC with nine digits of fraction, as Docker's
/// `logs --timestamps` prints it (fixed width, so stamps sort as their times do).
public enum LogStamp {
    /// The stamp's length in bytes ("2006-01-02T15:04:05.000000000Z").
    public static let length = 30

    public static func format(_ nanoseconds: Int64) -> String {
        var seconds = time_t(nanoseconds.quotientFloor(1_000_000_000))
        let fraction = nanoseconds - Int64(seconds) * 1_000_000_000
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let digits = String(fraction)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
            + String(repeating: "0", count: 9 - digits.count) + digits + "Z"
    }

    /// The time of a stamp this type formats, or nil for anything else.
    public static func parse<Bytes: Collection<UInt8>>(_ stamp: Bytes) -> Int64? {
        let bytes = Array(stamp)
        guard bytes.count == length, bytes[4] == 0x2D, bytes[7] == 0x2D, bytes[10] == 0x54, bytes[13] == 0x3A, bytes[16] == 0x3A,
              bytes[19] == 0x2E, bytes[29] == 0x5A else { return nil }
        func number(_ range: Range<Int>) -> Int? {
            var value = 0
            for byte in bytes[range] {
                guard (0x30...0x39).contains(byte) else { return nil }
                value = value * 10 + Int(byte - 0x30)
            }
            return value
        }
        guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10), let hour = number(11..<13),
              let minute = number(14..<16), let second = number(17..<19), let fraction = number(20..<29) else { return nil }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        return Int64(timegm(&parts)) * 1_000_000_000 + Int64(fraction)
    }
}

private extension Int64 {
    func quotientFloor(_ divisor: Int64) -> Int64 {
        let (quotient, remainder) = quotientAndRemainder(dividingBy: divisor)
        return remainder < 0 ? quotient - 1 : quotient
    }
}
