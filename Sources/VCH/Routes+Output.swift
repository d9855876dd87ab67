import Engine
import Foundation
import Synchronization

/// logs and the output half of attach: the agent's stdout and stderr logs, each followed on
/// its own, framed (no TTY) or raw (TTY) and merged as the pieces arrive.
extension VirtualContainerHost {
    struct OutputOptions {
        var stdout = true
        var stderr = true
        var follow = false
        /// From the first byte (else from what is there now).
        var fromStart = true
        /// Only the last N lines of what is there now.
        var tail: Int?
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
        for name in ["since", "until"] where (request.string(name) ?? "0") != "0" && request.string(name) != "" {
            throw DockerError.badRequest("logs --\(name) is not supported: the host agent keeps no time per line")
        }
        if try request.bool("details") { throw DockerError.badRequest("logs --details is not supported by this VCH") }
        let info = try await resolve(reference)
        let tty = info.labels[Label.tty] == "1"
        let output = try await output(info, options)
        return DockerResponse(headers: [("Content-Type", StreamFrames.contentType(tty: tty))], body: .stream(output))
    }

    func output(_ info: ContainerInfo, _ options: OutputOptions) async throws -> AsyncThrowingStream<Data, Error> {
        let tty = info.labels[Label.tty] == "1"
        var streams: [AsyncThrowingStream<Data, Error>] = []
        for kind in [StreamKind.stdout, .stderr] where kind == .stdout ? options.stdout : options.stderr {
            let base = "/v1/containers/\(info.id)/logs?stream=\(kind.agentName)"
            var source: AsyncThrowingStream<Data, Error>
            let running = info.state != .exited
            if options.fromStart, options.tail == nil, options.follow, running {
                source = followUntilExit(info.id, base, since: 0)
            } else {
                let present = try await agent.call("GET", base).body
                var shown = options.fromStart ? present : Data()
                if let tail = options.tail { shown = Self.lastLines(shown, tail) }
                source = ByteStreams.single(shown)
                if options.follow, running { source = ByteStreams.concat(source, followUntilExit(info.id, base, since: present.count)) }
            }
            if options.timestamps {
                let stamper = LineStamper()
                source = ByteStreams.map(source) { stamper.stamp($0) }
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
    /// rest is read in one request.
    func followUntilExit(_ id: String, _ base: String, since: Int) -> AsyncThrowingStream<Data, Error> {
        let (stream, continuation) = AsyncThrowingStream<Data, Error>.makeStream()
        let (agent, watch) = (self.agent, self.watch)
        let task = Task {
            let state = FollowState(sent: since)
            let (signals, signal) = AsyncStream<Void>.makeStream()
            // The shared wait outlives this stream when it goes first; it ends with the container.
            Task {
                _ = await watch.exit(id, agent: agent)
                state.exited.withLock { $0 = true }
                signal.yield()
            }
            let delay = Task {
                try await Task.sleep(for: Self.followDelay)
                signal.yield()
            }
            await withTaskCancellationHandler {
                var next = signals.makeAsyncIterator()
                _ = await next.next()  // the exit, or the delay
                guard !state.exited.withLock({ $0 }), !Task.isCancelled else { return }
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
                do {
                    _ = try await running.value
                } catch is CancellationError {
                } catch {
                    continuation.finish(throwing: error)
                    return
                }
            }
            let offset = state.sent.withLock { $0 }
            if let rest = try? await agent.call("GET", base + "&since=\(offset)").body, !rest.isEmpty { continuation.yield(rest) }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// The last `count` lines of `data`.
    static func lastLines(_ data: Data, _ count: Int) -> Data {
        guard count > 0 else { return Data() }
        let bytes = [UInt8](data)
        var end = bytes.count
        if end > 0, bytes[end - 1] == 0x0A { end -= 1 }
        var seen = 0
        var index = end
        while index > 0 {
            if bytes[index - 1] == 0x0A {
                seen += 1
                if seen == count { return Data(bytes[index...]) }
            }
            index -= 1
        }
        return data
    }
}

/// One log stream's progress, shared by its follow and its end.
final class FollowState: Sendable {
    /// Bytes sent so far (the offset of the next).
    let sent: Mutex<Int>
    let exited = Mutex(false)
    let follow = Mutex<Task<Void, Error>?>(nil)

    init(sent: Int) { self.sent = Mutex(sent) }
}

/// `--timestamps`: each line starts with the time the VCH read it (RFC 3339; the agent keeps
/// no time per line).
final class LineStamper: Sendable {
    private let atLineStart = Mutex(true)

    func stamp(_ data: Data) -> Data {
        let stamp = Data((DockerTime.rfc3339(Date().timeIntervalSince1970) + " ").utf8)
        return atLineStart.withLock { atStart in
            var out = Data(capacity: data.count + 40)
            for byte in data {
                if atStart { out.append(stamp) }
                out.append(byte)
                atStart = byte == 0x0A
            }
            return out
        }
    }
}
