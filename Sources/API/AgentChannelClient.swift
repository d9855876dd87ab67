import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// `AgentClient`'s async requests over the daemon's Unix socket, on NIO: a request is written,
/// and its answer read, by the event loop the caller runs on (a VCH's request handlers run on
/// their connection's loop), and the caller resumes there. The blocking client's async form
/// instead went to a dispatch thread and back, two thread wake-ups per call, each an exit of
/// the nested hypervisor when the woken CPU was idle; a `docker run` makes three such calls.
/// Connections are kept per event loop for the next request (at most `keptPerLoop` each).
final class AgentChannelClient: Sendable {
    let socketPath: String
    static let keptPerLoop = 8
    private let idle = Mutex<[ObjectIdentifier: [any Channel]]>([:])

    init(socketPath: String) { self.socketPath = socketPath }

    deinit {
        for channel in idle.withLock({ $0.values.flatMap { $0 } }) { channel.close(promise: nil) }
    }

    /// `sent`: told (once, on the loop) when the request has been written to the daemon's socket.
    func send(_ method: String, _ path: String, head: String, body: Data?, sent: (@Sendable () -> Void)? = nil) async throws -> AgentClient.Response {
        let loop = MultiThreadedEventLoopGroup.currentEventLoop ?? MultiThreadedEventLoopGroup.singleton.next()
        var bytes = ByteBuffer(string: head)
        if let body { bytes.writeBytes(body) }
        let request = bytes
        // Connecting, writing and reading all happen on the loop, chained: only the answer waits
        // for the caller's executor. (A caller whose executor is busy must not leave a connection
        // made but unwritten: the daemon closes a connection idle for 30 s.)
        let connected: @Sendable () -> EventLoopFuture<(AgentClient.Response, reusable: Bool, channel: any Channel)> = { [socketPath] in
            ClientBootstrap(group: loop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(AgentResponseReader()) }
                }
                .connect(unixDomainSocketPath: socketPath)
                .flatMap { channel in Self.exchange(channel, request, sent: sent) }
        }
        let answered: EventLoopFuture<(AgentClient.Response, reusable: Bool, channel: any Channel)>
        if let kept = takeIdle(on: loop) {
            // A kept connection the daemon closed meanwhile fails before any answer: retry once on a new one.
            answered = Self.exchange(kept, request, sent: sent).flatMapError { error in
                guard let failure = error as? AgentResponseReader.Failure, !failure.answerBegun else { return loop.makeFailedFuture(error) }
                kept.close(promise: nil)
                return connected()
            }
        } else {
            answered = connected()
        }
        let (response, reusable, channel) = try await answered.get()
        if reusable { keep(channel) } else { channel.close(promise: nil) }
        return response
    }

    /// A request whose answer streams (a follow of logs or events): `onStatus` once its head
    /// is in, `onPiece` with each piece of its body as it arrives, then `onEnd` (nil when the
    /// answer ended, else why it failed), all on an event loop, on a connection of its own
    /// that is never kept. No thread waits meanwhile: a follow that has nothing new holds a
    /// connection only. The returned cancel closes the connection at once.
    func stream(head: String, onStatus: @escaping @Sendable (Int) -> Void, onPiece: @escaping @Sendable (ByteBuffer) -> Void,
                onEnd: @escaping @Sendable ((any Error)?) -> Void) -> @Sendable () -> Void {
        let loop = MultiThreadedEventLoopGroup.currentEventLoop ?? MultiThreadedEventLoopGroup.singleton.next()
        let request = ByteBuffer(string: head)
        let connection = Mutex<(cancelled: Bool, channel: (any Channel)?)>((false, nil))
        ClientBootstrap(group: loop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(AgentResponseReader()) }
            }
            .connect(unixDomainSocketPath: socketPath)
            .whenComplete { result in
                let channel: any Channel
                switch result {
                case .failure(let error):
                    onEnd(error)
                    return
                case .success(let connected): channel = connected
                }
                let cancelled = connection.withLock { state -> Bool in
                    state.channel = channel
                    return state.cancelled
                }
                guard !cancelled, let reader = try? channel.pipeline.syncOperations.handler(type: AgentResponseReader.self) else {
                    channel.close(promise: nil)
                    onEnd(AgentResponseReader.Failure(description: "the stream was cancelled", answerBegun: false))
                    return
                }
                let answered = channel.eventLoop.makePromise(of: (AgentClient.Response, reusable: Bool).self)
                answered.futureResult.whenComplete { result in
                    channel.close(promise: nil)
                    if case .failure(let error) = result { onEnd(error) } else { onEnd(nil) }
                }
                reader.expect(answered, streamingTo: AgentResponseReader.Sink(status: onStatus, piece: onPiece))
                channel.writeAndFlush(request).whenFailure { error in reader.abandon("sending to the daemon failed: \(error)") }
            }
        return {
            let channel = connection.withLock { state -> (any Channel)? in
                state.cancelled = true
                return state.channel
            }
            channel?.close(promise: nil)
        }
    }

    private static func exchange(_ channel: any Channel, _ request: ByteBuffer,
                                 sent: (@Sendable () -> Void)? = nil) -> EventLoopFuture<(AgentClient.Response, reusable: Bool, channel: any Channel)> {
        let promise = channel.eventLoop.makePromise(of: (AgentClient.Response, reusable: Bool).self)
        let begin: @Sendable () -> Void = {
            // A kept connection the daemon has closed meanwhile (its idle timeout) has lost its
            // handlers, or fails the write: either way no answer has begun, and `send` retries.
            guard let reader = try? channel.pipeline.syncOperations.handler(type: AgentResponseReader.self) else {
                promise.fail(AgentResponseReader.Failure(description: "the connection to the daemon has closed", answerBegun: false))
                return
            }
            reader.expect(promise)
            channel.writeAndFlush(request).whenComplete { result in
                switch result {
                case .success: sent?()
                case .failure(let error): reader.abandon("sending to the daemon failed: \(error)")
                }
            }
        }
        if channel.eventLoop.inEventLoop { begin() } else { channel.eventLoop.execute(begin) }
        return promise.futureResult.map { ($0.0, $0.reusable, channel) }
    }

    private func takeIdle(on loop: any EventLoop) -> (any Channel)? {
        idle.withLock { table in
            let key = ObjectIdentifier(loop)
            while let channel = table[key]?.popLast() {
                if channel.isActive { return channel }
            }
            return nil
        }
    }

    private func keep(_ channel: any Channel) {
        let kept = idle.withLock { table -> Bool in
            let key = ObjectIdentifier(channel.eventLoop)
            guard table[key, default: []].count < Self.keptPerLoop else { return false }
            table[key, default: []].append(channel)
            return true
        }
        if !kept { channel.close(promise: nil) }
    }
}

/// Reads one HTTP/1.1 answer at a time off an agent connection.
final class AgentResponseReader: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: used on its channel's event loop only (NIO's calls, and `expect` from `exchange`, which runs there).
    typealias InboundIn = ByteBuffer

    struct Failure: Error, CustomStringConvertible {
        let description: String
        /// Some of the answer had come: the request may have been served, so it is not retried.
        let answerBegun: Bool
    }

    private enum State {
        case head
        case body(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkEnd
        case trailers
        case untilClose
    }

    /// Where a streamed answer goes as it comes: its status once the head is in, then each
    /// piece of its body (the answer's `body` then stays empty).
    struct Sink {
        let status: (Int) -> Void
        let piece: (ByteBuffer) -> Void
    }

    private var promise: EventLoopPromise<(AgentClient.Response, reusable: Bool)>?
    private var sink: Sink?
    private var input = ByteBuffer()
    private var state = State.head
    private var status = 0
    private var headers: [String: String] = [:]
    private var body = Data()
    private var reusable = true
    private var begun = false

    func expect(_ promise: EventLoopPromise<(AgentClient.Response, reusable: Bool)>, streamingTo sink: Sink? = nil) {
        self.promise = promise
        self.sink = sink
        (state, status, headers, body, reusable, begun) = (.head, 0, [:], Data(), true, false)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        begun = true
        input.writeBuffer(&bytes)
        do {
            try advance()
        } catch {
            fail(context, "the daemon's answer is not HTTP/1.1: \(error)")
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .untilClose = state, promise != nil {
            reusable = false
            finish()
        } else {
            fail(context, "the daemon closed the connection mid-response")
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(context, "reading from the daemon failed: \(error)")
    }

    private func fail(_ context: ChannelHandlerContext, _ message: String) {
        abandon(message)
        context.close(promise: nil)
    }

    /// Fails the answer awaited, if one is (once: the write's failure and the close may both report).
    func abandon(_ message: String) {
        guard let promise else { return }
        self.promise = nil
        promise.fail(Failure(description: message, answerBegun: begun))
    }

    private func finish() {
        let promise = self.promise
        self.promise = nil
        if input.readableBytes > 0 { reusable = false }  // bytes past the answer: nothing was asked for them
        promise?.succeed((AgentClient.Response(status: status, headers: headers, body: body), reusable))
    }

    private struct Malformed: Error, CustomStringConvertible { let description: String }

    private func line() -> String? {
        guard let newline = input.readableBytesView.firstIndex(of: 0x0A) else { return nil }
        var bytes = input.readSlice(length: newline - input.readerIndex + 1)!.readableBytesView.dropLast()
        if bytes.last == 0x0D { bytes = bytes.dropLast() }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Moves up to `count` bytes of the body from the input (to the sink, when streaming);
    /// returns how many are still to come.
    private func takeBody(_ count: Int) -> Int {
        let take = min(count, input.readableBytes)
        if let sink {
            if take > 0 { sink.piece(input.readSlice(length: take)!) }
        } else {
            body.append(contentsOf: input.readBytes(length: take)!)
        }
        return count - take
    }

    private func advance() throws {
        while promise != nil {
            switch state {
            case .head:
                guard input.readableBytesView.firstRange(of: [0x0D, 0x0A, 0x0D, 0x0A]) != nil else {
                    if input.readableBytes > 64 * 1024 { throw Malformed(description: "a head over 64 KiB") }
                    return
                }
                let statusLine = line() ?? ""
                let parts = statusLine.split(separator: " ", maxSplits: 2)
                guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let code = Int(parts[1]) else { throw Malformed(description: "status line \(statusLine.prefix(64))") }
                status = code
                while let header = line(), !header.isEmpty {
                    guard let colon = header.firstIndex(of: ":") else { continue }
                    var value = header[header.index(after: colon)...]
                    while value.first == " " || value.first == "\t" { value.removeFirst() }
                    while value.last == " " || value.last == "\t" { value.removeLast() }
                    headers[header[..<colon].lowercased()] = String(value)
                }
                reusable = headers["connection"]?.lowercased() != "close"
                sink?.status(status)
                if headers["transfer-encoding"]?.lowercased() == "chunked" {
                    state = .chunkSize
                } else if let length = headers["content-length"].flatMap(Int.init), length >= 0 {
                    state = .body(remaining: length)
                } else if status == 204 || status == 304 || (100..<200).contains(status) {
                    state = .body(remaining: 0)
                } else {
                    state = .untilClose
                }
            case .body(let remaining):
                let left = takeBody(remaining)
                if left > 0 {
                    state = .body(remaining: left)
                    return
                }
                state = .head
                finish()
            case .chunkSize:
                guard let sizeLine = line() else { return }
                guard let size = Int(sizeLine.split(separator: ";").first?.trimmingCharacters(in: .whitespaces) ?? "", radix: 16), size >= 0 else {
                    throw Malformed(description: "chunk size \(sizeLine.prefix(32))")
                }
                state = size == 0 ? .trailers : .chunkData(remaining: size)
            case .chunkData(let remaining):
                let left = takeBody(remaining)
                if left > 0 {
                    state = .chunkData(remaining: left)
                    return
                }
                state = .chunkEnd
            case .chunkEnd:
                guard let empty = line() else { return }
                guard empty.isEmpty else { throw Malformed(description: "a chunk's data does not end with CRLF") }
                state = .chunkSize
            case .trailers:
                guard let trailer = line() else { return }
                if trailer.isEmpty {
                    state = .head
                    finish()
                }
            case .untilClose:
                _ = takeBody(input.readableBytes)
                return
            }
        }
    }
}
