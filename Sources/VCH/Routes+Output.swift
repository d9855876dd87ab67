import Engine
import Foundation
import Synchronization

/// logs and the output half of attach: the agent's stdout and stderr logs, framed (no TTY) or
/// raw (TTY). logs takes them as lines with the times they were written, in that order;
/// attach follows each on its own and merges the pieces as they arrive.
extension VirtualContainerHost {
    struct OutputOptions {
        var stdout = true
        var stderr = true
        var follow = false
        /// From the first byte (else from what is there now).
        var fromStart = true
        /// logs: only the last N lines of what is there now (of both streams together).
        var tail: Int?
        /// logs: each line with the time it was written.
        var timestamps = false
    }

    func logs(_ reference: String, _ request: DockerRequest) async throws -> DockerResponse {
        var options = OutputOptions()
        options.stdout = try request.bool("stdout")
        options.stderr = try request.bool("stderr")
        guard options.stdout || options.stderr else { throw DockerError.badRequest("Bad parameters: you must choose at least one stream") }
        options.follow = try request.bool("follow")
        options.timestamps = try request.bool("timestamps")
        if let tail = request.string("tail"), tail != "all", !tail.isEmpty {
            guard let count = Int(tail), count >= 0 else { throw DockerError.badRequest("tail \(tail) is not a number of lines or \"all\"") }
            options.tail = count
        }
        let since = try Self.logTime(request, "since")
        let until = try Self.logTime(request, "until")
        if try request.bool("details") { throw DockerError.badRequest("logs --details is not supported by this VCH") }
        let info = try await resolve(reference)
        let tty = info.labels[Label.tty] == "1"
        let output = try await timedLogs(info, options, since: since, until: until)
        return DockerResponse(headers: [("Content-Type", StreamFrames.contentType(tty: tty))], body: .stream(output))
    }

    /// Docker's `since` or `until` of logs: seconds since 1970, with up to nine digits of
    /// fraction (what the docker CLI sends for a date or a duration ago); "0" or none is no
    /// bound. In nanoseconds.
    static func logTime(_ request: DockerRequest, _ name: String) throws -> Int64? {
        guard let text = request.string(name), !text.isEmpty, text != "0" else { return nil }
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let fraction = parts.count == 2 ? parts[1] : ""
        // At most LogQuery.latestTime: the nanoseconds below fit in 64 bits.
        guard let seconds = Int64(parts[0]), seconds >= 0, seconds <= Int64(LogQuery.latestTime), fraction.count <= 9,
              fraction.allSatisfy(\.isASCII), fraction.allSatisfy(\.isNumber), parts[0].allSatisfy(\.isNumber) else {
            throw DockerError.badRequest("\(name) \(text) is not a time in seconds since 1970 (with up to nine digits of fraction)")
        }
        let nanoseconds = Int64(fraction.padding(toLength: 9, withPad: "0", startingAt: 0)) ?? 0
        return seconds * 1_000_000_000 + nanoseconds
    }

    /// `docker logs`: the agent's lines with the times they were written (its time indexes),
    /// stdout's and stderr's merged in that order, `since`/`until` (nanoseconds) and `tail`
    /// applied, stamped with `--timestamps`; with follow, what comes after as it comes, until
    /// the container's end (or a line past `until`).
    func timedLogs(_ info: ContainerInfo, _ options: OutputOptions, since: Int64?, until: Int64?) async throws -> AsyncThrowingStream<Data, Error> {
        let tty = info.labels[Label.tty] == "1"
        let kinds = [StreamKind.stdout, .stderr].filter { $0 == .stdout ? options.stdout : options.stderr }
        var present: [(kind: StreamKind, line: StampedLine)] = []
        var offsets: [Int] = []
        for kind in kinds {
            let body = try await agent.call("GET", "/v1/containers/\(info.id)/logs?stream=\(kind.agentName)&timestamps=true").body
            var parser = StampedLines()
            let lines = parser.take(body) + parser.finish()
            offsets.append(parser.logBytes)
            present.append(contentsOf: lines.map { (kind, $0) })
        }
        // In time order; stdout's first on a tie (the sort is stable).
        present = present.enumerated().sorted { ($0.element.line.time, $0.offset) < ($1.element.line.time, $1.offset) }.map(\.element)
        present = present.filter { Self.within($0.line.time, since, until) }
        if let tail = options.tail { present = Array(present.suffix(tail)) }
        let timestamps = options.timestamps
        var shown = Data()
        for (kind, line) in present { shown.append(StreamFrames.encode(line.shown(timestamps: timestamps), kind, tty: tty)) }
        let nowNanoseconds = Int64(Date().timeIntervalSince1970 * 1e9)
        guard options.follow, info.state != .exited, until.map({ $0 > nowNanoseconds }) ?? true else { return ByteStreams.single(shown) }
        var follows: [AsyncThrowingStream<Data, Error>] = []
        for (kind, offset) in zip(kinds, offsets) {
            let source = agent.stream("/v1/containers/\(info.id)/logs?stream=\(kind.agentName)&timestamps=true&follow=true&since=\(offset)")
            follows.append(Self.stampedLines(source, kind, tty: tty, timestamps: timestamps, since: since, until: until))
        }
        return ByteStreams.concat(ByteStreams.single(shown), ByteStreams.merge(follows))
    }

    static func within(_ time: Int64, _ since: Int64?, _ until: Int64?) -> Bool {
        (since.map { time >= $0 } ?? true) && (until.map { time <= $0 } ?? true)
    }

    /// A followed log's stamped lines, filtered and framed as they come; ends at the first line
    /// past `until`.
    static func stampedLines(_ source: AsyncThrowingStream<Data, Error>, _ kind: StreamKind, tty: Bool, timestamps: Bool,
                             since: Int64?, until: Int64?) -> AsyncThrowingStream<Data, Error> {
        let (stream, continuation) = AsyncThrowingStream<Data, Error>.makeStream()
        let task = Task {
            var parser = StampedLines()
            do {
                var pieces = source.makeAsyncIterator()
                reading: while true {
                    let piece = try await pieces.next()
                    let lines = piece.map { parser.take($0) } ?? parser.finish()
                    var out = Data()
                    for line in lines {
                        if let until, line.time > until { break reading }
                        if within(line.time, since, until) { out.append(StreamFrames.encode(line.shown(timestamps: timestamps), kind, tty: tty)) }
                    }
                    if !out.isEmpty { continuation.yield(out) }
                    if piece == nil { break }
                }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    func output(_ info: ContainerInfo, _ options: OutputOptions) async throws -> AsyncThrowingStream<Data, Error> {
        let tty = info.labels[Label.tty] == "1"
        var streams: [AsyncThrowingStream<Data, Error>] = []
        for kind in [StreamKind.stdout, .stderr] where kind == .stdout ? options.stdout : options.stderr {
            let base = "/v1/containers/\(info.id)/logs?stream=\(kind.agentName)"
            var source: AsyncThrowingStream<Data, Error>
            let running = info.state != .exited
            if options.fromStart, options.follow, running {
                source = followUntilExit(info, kind, since: 0)
            } else {
                let present = try await agent.call("GET", base).body
                source = ByteStreams.single(options.fromStart ? present : Data())
                if options.follow, running { source = ByteStreams.concat(source, followUntilExit(info, kind, since: present.count)) }
            }
            streams.append(ByteStreams.map(source) { StreamFrames.encode($0, kind, tty: tty) })
        }
        return ByteStreams.merge(streams)
    }

    /// How long a container runs before its logs are followed: one that ends sooner (most
    /// `docker run`s) has its output read once, at its exit, with no follow at all.
    static let followDelay = Duration.milliseconds(50)

    /// One log from byte `since` until the container's exit: read once at the exit when it
    /// comes within `followDelay`, else followed (the agent's follow) until the exit, which the
    /// shared wait reports at once where the agent's follow notices on its next poll; then the
    /// rest is taken from the wait's answer when it carries the output, else read in one request.
    func followUntilExit(_ info: ContainerInfo, _ kind: StreamKind, since: Int) -> AsyncThrowingStream<Data, Error> {
        let (stream, continuation) = AsyncThrowingStream<Data, Error>.makeStream()
        let (agent, watch) = (self.agent, self.watch)
        let (id, autoRemove) = (info.id, info.labels[Label.autoRemove] == "1")
        let base = "/v1/containers/\(id)/logs?stream=\(kind.agentName)"
        let task = Task {
            let state = FollowState(sent: since)
            let (signals, signal) = AsyncStream<Void>.makeStream()
            // The shared wait outlives this stream when it goes first; it ends with the container.
            Task {
                let exit = await watch.exit(id, agent: agent, autoRemove: autoRemove)
                state.exited.withLock { $0 = exit ?? ExitInfo(exitCode: 137, reason: "unknown") }
                signal.yield()
            }
            let delay = Task {
                try await Task.sleep(for: Self.followDelay)
                signal.yield()
            }
            await withTaskCancellationHandler {
                var next = signals.makeAsyncIterator()
                _ = await next.next()  // the exit, or the delay
                guard state.exited.withLock({ $0 == nil }), !Task.isCancelled else { return }
                let started = Task {
                    defer { signal.yield() }
                    for try await piece in agent.stream(base + "&follow=true&since=\(since)") {
                        state.sent.withLock { $0 += piece.count }
                        continuation.yield(piece)
                    }
                }
                state.follow.withLock { $0 = started }
                _ = await next.next()  // the exit, or the follow's own end
            } onCancel: {
                state.follow.withLock { $0?.cancel() }
                signal.finish()
            }
            delay.cancel()
            if let running = state.follow.withLock({ $0 }) {
                running.cancel()
                // Whatever it ended with: the cancel shuts its agent connection down, which its
                // read reports as that connection's error, not as a CancellationError. The read
                // below is what says what is left (and fails if the agent cannot answer).
                _ = await running.result
            }
            // The rest comes after the exit, whatever ended the follow: a follow can end first
            // (the agent's follow sees the end, or a --rm container is already removed and the
            // follow is refused), and the exit's answer is what carries the output of a
            // container the agent removed with it. (A stream whose client left ends here.)
            guard !Task.isCancelled else { return continuation.finish() }
            let exit = await watch.exit(id, agent: agent, autoRemove: autoRemove)
            let offset = state.sent.withLock { $0 }
            do {
                let log = exit.flatMap { kind == .stdout ? $0.stdout : $0.stderr }
                let rest: Data
                if let log { rest = Data(log.dropFirst(offset)) } else { rest = try await agent.call("GET", base + "&since=\(offset)").body }
                if !rest.isEmpty { continuation.yield(rest) }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }
}

/// One log stream's progress, shared by its follow and its end.
final class FollowState: Sendable {
    /// Bytes sent so far (the offset of the next).
    let sent: Mutex<Int>
    /// How the container ended (with its output when the wait's answer carried it), once it has.
    let exited = Mutex<ExitInfo?>(nil)
    let follow = Mutex<Task<Void, Error>?>(nil)

    init(sent: Int) { self.sent = Mutex(sent) }
}

/// One line of the agent's logs with `timestamps=true`: its time and its bytes (with the
/// newline, when it has one).
struct StampedLine: Sendable {
    let time: Int64
    let stamp: Data
    let bytes: Data

    /// As `docker logs` shows it: the stamp, a space and the line; or the line alone.
    func shown(timestamps: Bool) -> Data { timestamps ? stamp + [0x20] + bytes : bytes }
}

/// Splits the agent's stamped logs into lines as the pieces come: each line is a stamp
/// (`LogStamp`), a space, and the log's bytes through a newline — or to the answer's end,
/// the one place the agent puts a line not ended yet.
struct StampedLines {
    private var buffer = Data()
    /// The log's own bytes in the lines so far (the answer's bytes less the stamps): where a
    /// later request for what comes next starts.
    private(set) var logBytes = 0

    mutating func take(_ piece: Data) -> [StampedLine] {
        buffer.append(piece)
        var lines: [StampedLine] = []
        let prefix = LogStamp.length + 1
        var start = buffer.startIndex
        while buffer.endIndex - start > prefix, let newline = buffer[(start + prefix)...].firstIndex(of: 0x0A) {
            lines.append(line(buffer[start...newline]))
            start = newline + 1
        }
        buffer = Data(buffer[start...])
        return lines
    }

    /// The last line, not ended, at the answer's end.
    mutating func finish() -> [StampedLine] {
        defer { buffer = Data() }
        return buffer.count > LogStamp.length + 1 ? [line(buffer)] : []
    }

    private mutating func line(_ record: Data) -> StampedLine {
        let stamp = Data(record.prefix(LogStamp.length))
        let bytes = Data(record.dropFirst(LogStamp.length + 1))
        logBytes += bytes.count
        return StampedLine(time: LogStamp.parse(stamp) ?? 0, stamp: stamp, bytes: bytes)
    }
}
