import Engine
import Glibc
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOExtras
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The agent's HTTP/1.1 server on its Unix socket: the CLI's, the VCHs' and the load runner's
/// way in, so every container launch passes here. It reads requests off the socket itself
/// (`HTTP1RequestParser`), hands each whole to the same router as the TCP listener, on the
/// connection's event loop thread, and writes the answer straight to the socket.
///
/// Why not Hummingbird's HTTP/1 server here: measured on this kind of machine, a `GET /v1/_ping`
/// through it took ~80 µs of CPU back to back and ~450 µs after 20 ms idle, almost all of it in
/// the layers between the socket and the router (NIO's HTTP codec, the HTTPTypes conversion, the
/// async channel's reader and writer), which a request whose body is a small JSON object needs
/// none of. The TCP listener (remote callers, the web UI) keeps Hummingbird's server.
///
/// What a connection gets, as on the TCP listener: the connection limit (`ConnectionLimit`: one
/// over it is answered 429 at its first request and closed), the idle timeout
/// (`AgentLimits.idleTimeout`, counted while no request is being answered), bodies over
/// `AgentLimits.maxBodyBytes` refused with 413, `Expect: 100-continue`, keep-alive and
/// pipelined requests answered in order, and a client that closes its end while its answer is a
/// stream, or a wait not yet answered, has its connection closed (see `AbandonedStreamHandler`).
/// The caller is the peer's uid (SO_PEERCRED), read once per connection.
///
/// Shutdown (graceful, from the service group): the socket stops accepting, idle connections
/// close, busy ones close after their answer, and `run` returns when all are closed.
struct AgentHTTPServer: Service {
    let socketPath: String
    /// The event loop group that accepts its connections (and serves them without `connectionLoops`).
    let group: any EventLoopGroup
    /// Where its connections are served: each on a loop of its own, up to a number (see
    /// `ConnectionLoops`); nil: on `group`.
    let connectionLoops: ConnectionLoops?
    let responder: RouterResponder<AgentContext>
    let limit: ConnectionLimit
    /// Connections accepted at once (beyond the limit only to be refused).
    let acceptedAtOnce: Int
    let logger: Logger
    /// In workers mode: the engine whose workers may keep a connection after a run they
    /// answered on it (`Engine.handOverConnection`); nil: every connection stays here.
    var handsOverTo: Engine? = nil
    /// Returns when the socket may listen: the daemon's other listeners are up first, so that
    /// a client that finds the socket answering finds every listener answering.
    let listenAfter: @Sendable () async -> Void
    let onListening: @Sendable () -> Void

    func run() async throws {
        await listenAfter()
        try Task.checkCancellation()
        if let connectionLoops { return try await run(on: connectionLoops) }
        let quiescing = ServerQuiescingHelper(group: group)
        let shared = AgentConnectionHandler.Shared(responder: responder, limit: limit, logger: logger, fence: AnswerFence(), engine: nil,
                                                   serveAgain: ServeAgain())
        let acceptedAtOnce = self.acceptedAtOnce
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        AvailableConnectionsChannelHandler(delegate: MaximumAvailableConnections(acceptedAtOnce)))
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AgentConnectionHandler(shared: shared, channel: channel, ownsLoop: false, socket: nil))
                }
            }
        let listener = try await bootstrap.bind(unixDomainSocketPath: socketPath).get()
        onListening()
        try? await gracefulShutdown()
        let closed = listener.eventLoop.makePromise(of: Void.self)
        quiescing.initiateShutdown(promise: closed)
        try await closed.futureResult.get()
    }
}

extension AgentHTTPServer {
    /// Serves each connection on a loop of its own (`ConnectionLoops`), accepting them on a
    /// thread of its own (`UnixAcceptor`). Shutdown as `run`'s: accepting stops, each
    /// connection is told to quiesce (idle ones close, busy ones after their answer), and this
    /// returns once all are closed, their loops shut down after them.
    private func run(on loops: ConnectionLoops) async throws {
        let acceptor = try UnixAcceptor(path: socketPath, backlog: 256, acceptedAtOnce: acceptedAtOnce)
        let serveAgain = ServeAgain()
        let shared = AgentConnectionHandler.Shared(responder: responder, limit: limit, logger: logger, fence: AnswerFence(), engine: handsOverTo,
                                                   serveAgain: serveAgain)
        let open = Mutex<[ObjectIdentifier: any Channel]>([:])
        let logger = self.logger
        // `returned`: a connection its worker gave back, with the bytes it read of the next
        // request (counted against the limit already).
        let serve: @Sendable (Int32, [UInt8]?) -> Void = { fd, returned in
            let (loop, owned) = loops.take()
            // Its loop and its place among those accepted at once go back once: when its
            // channel closes, or when no channel could be made for it.
            let given = OnceFlag()
            let giveBack: @Sendable () -> Void = {
                guard given.claim() else { return }
                if owned { loops.give(loop) }
                acceptor.connectionClosed()
            }
            ClientBootstrap(group: loop)
                .channelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
                .channelInitializer { channel in
                    open.withLock { $0[ObjectIdentifier(channel)] = channel }
                    channel.closeFuture.whenComplete { _ in
                        open.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(channel)) }
                        giveBack()
                    }
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(AgentConnectionHandler(shared: shared, channel: channel, ownsLoop: owned, socket: fd,
                                                                                              returned: returned))
                    }
                }
                .withConnectedSocket(fd)
                .whenFailure { error in
                    logger.debug("a connection could not be served", metadata: ["error": "\(error)"])
                    if returned != nil { shared.limit.release() }
                    giveBack()
                }
        }
        serveAgain.set { fd, leftover in
            acceptor.connectionReopened()
            serve(fd, leftover)
        }
        acceptor.start { fd in serve(fd, nil) }
        onListening()
        try? await gracefulShutdown()
        await acceptor.stop()
        let channels = open.withLock { Array($0.values) }
        for channel in channels {
            channel.eventLoop.execute { channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent()) }
        }
        for channel in channels { try? await channel.closeFuture.get() }
        await loops.shutdown()
    }
}

/// One connection of `AgentHTTPServer`: reads its requests, answers them one at a time.
final class AgentConnectionHandler: ChannelDuplexHandler, @unchecked Sendable {
    // @unchecked: its state is touched on the channel's event loop only: NIO calls the handler
    // there, and a request's task prefers that loop's executor, so its nonisolated code (the
    // body writer, `answer`'s end, which also hops to the loop should it find itself off it)
    // runs there too.
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// What every connection of one server uses.
    struct Shared: Sendable {
        let responder: RouterResponder<AgentContext>
        let limit: ConnectionLimit
        let logger: Logger
        /// Requests wait here for runs whose answers a worker wrote (`AnswerFence`).
        let fence: AnswerFence
        /// In workers mode: connections go to the worker that answered a run on them.
        let engine: Engine?
        /// Serves a connection its worker gave back.
        let serveAgain: ServeAgain
    }

    private let shared: Shared
    private let channel: any Channel
    private let executor: EventLoopExecutor
    /// The connection has its loop to itself (`ConnectionLoops`): a run may block it.
    private let ownsLoop: Bool
    /// Its socket, when this server accepted it itself (`UnixAcceptor`; the channel owns and
    /// closes it): a run's answer may then be handed to a worker (`EarlyAnswer.handOff`).
    fileprivate let socket: Int32?
    private var parser = HTTP1RequestParser(maxBodyBytes: AgentLimits.maxBodyBytes)
    private var input = ByteBuffer()
    private var dates = HTTPDateCache()
    /// "uid:N" of the peer, once read.
    private var actor: String?

    /// Over the connection limit: its first request is answered 429, then it closes.
    private var refused = false
    /// A request is being answered.
    private var busy = false
    /// The client closed its end (no more requests come).
    private var inputClosed = false
    /// Close once the answer in progress is out (the server shuts down, or the request said so).
    private var closeWhenDone = false
    /// The answer going out is a stream (no Content-Length).
    private var streaming = false
    /// The request being answered is a container's wait whose answer has not begun.
    private var waiting = false
    /// The answer is out and the connection closes once the refused body it was about is dropped.
    private var closeWhenDiscarded = false
    /// A read held back while a request is answered and enough input is queued.
    private var readHeld = false
    /// Inside the start of a request's task (`serveInput`): an answer finished meanwhile goes
    /// on with the input in a later turn of the loop, not by recursion.
    private var starting = false
    private var lastActivity = NIODeadline.now()
    private var idleCheck: Scheduled<Void>?
    private var refusalDeadline: Scheduled<Void>?
    /// A connection its worker gave back: counted against the limit already, and these bytes
    /// of its next request read (`CallerConnections`).
    private let returned: [UInt8]?
    /// The worker that wrote the last run's answer whole: the connection may go to it.
    private var answeredBy: Int?
    /// Runs in a row whose answers their worker wrote whole (`answeredBy`).
    private var answeredInARow = 0

    init(shared: Shared, channel: any Channel, ownsLoop: Bool, socket: Int32?, returned: [UInt8]? = nil) {
        self.shared = shared
        self.channel = channel
        self.ownsLoop = ownsLoop
        self.socket = socket
        self.returned = returned
        executor = EventLoopExecutor(channel.eventLoop)
    }

    // MARK: Channel events

    func channelActive(context: ChannelHandlerContext) {
        if let returned {
            let limit = shared.limit
            context.channel.closeFuture.whenComplete { _ in limit.release() }
            if !returned.isEmpty { input = context.channel.allocator.buffer(bytes: returned) }
        } else if !shared.limit.admit(context.channel) {
            refused = true
            shared.logger.debug("connection refused: over the connection limit", metadata: ["limit": "\(shared.limit.limit)"])
            let channel = context.channel
            refusalDeadline = context.eventLoop.scheduleTask(in: ConnectionLimit.refusalDeadline) { channel.close(promise: nil) }
        }
        peerCredentialsFuture(of: context.channel)?.whenSuccess { [self] credentials in actor = "uid:\(credentials.uid)" }
        armIdleCheck(in: AgentLimits.idleTimeout)
        context.fireChannelActive()
        if returned?.isEmpty == false { serveInput() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        refusalDeadline?.cancel()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        lastActivity = .now()
        if input.readableBytes == 0 {
            input = bytes
        } else {
            input.writeBuffer(&bytes)
        }
        if parser.isDiscarding {
            if parser.discard(&input), closeWhenDiscarded { channel.close(promise: nil) }
            return
        }
        if !busy { serveInput() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            inputClosed = true
            if busy {
                if streaming || waiting { channel.close(promise: nil) }
            } else {
                serveInput()
            }
        } else if event is ChannelShouldQuiesceEvent {
            closeWhenDone = true
            if !busy { channel.close(promise: nil) }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func read(context: ChannelHandlerContext) {
        // Backpressure on pipelined input: while an answer is made, at most one more request's worth is queued.
        if busy && input.readableBytes > HTTP1RequestParser.maxHeadBytes + AgentLimits.maxBodyBytes {
            readHeld = true
            return
        }
        context.read()
    }

    // MARK: Requests

    /// Parses what has come in and starts the answer of a whole request; closes when the input has ended.
    private func serveInput() {
        guard !busy, channel.isActive else { return }
        let outcome = parser.next(&input)
        if parser.continueWanted {
            parser.continueWanted = false
            channel.writeAndFlush(ByteBuffer(staticString: "HTTP/1.1 100 Continue\r\n\r\n"), promise: nil)
        }
        switch outcome {
        case .needMore:
            if inputClosed { channel.close(promise: nil) }
        case .refused(let refusal):
            let code = refusal.status == .contentTooLarge ? "too_large" : "invalid"
            writeAndClose(APIError(status: refusal.status, code: code, message: "malformed HTTP request: \(refusal.message)"))
        case .request(let parsed):
            if refused {
                writeAndClose(APIError(status: .tooManyRequests, code: "too_many_connections",
                                       message: shared.limit.refusalMessage(option: "vmfork serve --max-connections")))
                return
            }
            busy = true
            closeWhenDone = closeWhenDone || parsed.closeAfter
            var isRun = false
            if parsed.head.method == .post, let path = parsed.head.path {
                let route = path.split(separator: "?", maxSplits: 1).first ?? ""
                waiting = route.hasPrefix("/v1/containers/") && route.hasSuffix("/wait")
                isRun = route == "/v1/containers/run"
            }
            let body = parsed.bodyTooLarge ? RequestBody(asyncSequence: TooLargeBody()) : RequestBody(buffer: parsed.body)
            let request = Request(head: parsed.head, body: body)
            var context = AgentContext(source: ApplicationRequestContextSource(channel: channel, logger: shared.logger))
            if let actor { context.actor = actor }
            context.ownsLoop = ownsLoop
            let early = EarlyAnswer(handler: self, headOnly: parsed.head.method == .head)
            context.earlyAnswer = early
            // Begun here, on the loop, up to its first wait (routing, decoding, the engine's
            // call up to its hand-off): no turn of the loop between the request and its work.
            starting = true
            Task.immediate(executorPreference: executor) { await self.answer(request, context: context, early: early, isRun: isRun) }
            starting = false
        }
    }

    /// Answers one request, then goes on with the input (a pipelined request) or closes.
    private func answer(_ request: Request, context: AgentContext, early: EarlyAnswer, isRun: Bool) async {
        // After the runs whose answers a worker wrote before this request came, on this
        // connection or one a worker holds (not a run: see `AnswerFence`).
        if !isRun {
            await shared.fence.passed()
            await shared.engine?.syncHandedOverConnections()
        }
        let response: Response
        do {
            response = try await shared.responder.respond(to: request, context: context)
        } catch {
            if early.sent {
                // Answered already; what failed after is the route's own business (logged).
                shared.logger.debug("a request failed after its answer", metadata: ["error": "\(error)"])
            }
            response = APIError(error).response
        }
        let handed = early.endHandOff()
        answeredBy = nil
        if case .answered(_, let rest, let shard) = handed, rest.isEmpty {
            answeredBy = shard
            answeredInARow += 1
        } else {
            answeredInARow = 0
        }
        if case .answered(_, let rest, _) = handed {
            // Its worker wrote the answer (what the connection could not take at once is written here).
            if !rest.isEmpty {
                do { try await channel.writeAndFlush(ByteBuffer(bytes: rest)).get() } catch { channel.close(promise: nil) }
            }
        } else if handed == .unknown {
            // Its worker went away after it had the connection: any answer here could follow part of one.
            channel.close(promise: nil)
        } else if let written = early.written {
            // The answer went before the route returned: its write's end stands for the body's.
            do { try await written.get() } catch { channel.close(promise: nil) }
        } else {
            let writer = ConnectionBodyWriter(handler: self, head: response.head, contentLength: response.body.contentLength,
                                              headOnly: request.method == .head)
            do {
                try await response.body.write(writer)
            } catch {
                // The client is gone (a closed connection fails the write), or the stream failed midway: the connection ends.
                channel.close(promise: nil)
            }
        }
        let finished: @Sendable () -> Void = { [self] in
            busy = false
            streaming = false
            waiting = false
            lastActivity = .now()
            if closeWhenDone && parser.isDiscarding && !inputClosed {
                closeWhenDiscarded = true
                return
            }
            if closeWhenDone || (inputClosed && input.readableBytes == 0) {
                channel.close(promise: nil)
                return
            }
            // A connection its worker gave back goes again only after runs in a row: one whose
            // caller mixes runs with other requests would go back and forth at each.
            if let shard = answeredBy, answeredInARow >= (returned == nil ? 1 : Self.runsInARowToGoAgain), let engine = shared.engine,
               !inputClosed, !readHeld, parser.isBetweenRequests,
               input.readableBytes <= Self.leftoverLimit {
                return handOver(to: shard, engine: engine)
            }
            if readHeld {
                readHeld = false
                channel.read()
            }
            serveInput()
        }
        if channel.eventLoop.inEventLoop && !starting { finished() } else { channel.eventLoop.execute(finished) }
    }

    /// Runs in a row a worker answers on a connection it gave back before it goes to it again.
    static let runsInARowToGoAgain = 4

    /// The most bytes of a next request already read that go along with a connection to its worker.
    private static let leftoverLimit = 64 << 10

    /// Hands the connection to the worker that has just answered a run on it (on the loop,
    /// between requests): it reads the next ones itself (`CallerConnections`). This channel
    /// closes; the connection stays open on a duplicate of its descriptor kept until the
    /// worker gives it back (served again here, from the bytes it read) or closes it, and stays
    /// counted against the limit meanwhile.
    private func handOver(to shard: Int, engine: Engine) {
        guard let socket, channel.isActive else { return serveInput() }
        let kept = fcntl(socket, F_DUPFD_CLOEXEC, 0)
        guard kept >= 0 else { return serveInput() }
        let leftover = Array(input.readableBytesView)
        input.clear()
        let limit = shared.limit
        let serveAgain = shared.serveAgain
        limit.keep()
        idleCheck?.cancel()
        // On the loop: no read of this channel's after this (NIO closes its descriptor now).
        channel.close(promise: nil)
        let actor = self.actor ?? "unknown"
        Task {
            await engine.handOverConnection(kept, shard: shard, actor: actor, leftover: leftover) { end in
                switch end {
                case .returned(let bytes):
                    serveAgain(kept, bytes)
                case .closed:
                    Glibc.close(kept)
                    limit.release()
                }
            }
        }
    }

    private func writeAndClose(_ error: APIError) {
        busy = true
        var buffer = ByteBuffer()
        let body = ByteBuffer(bytes: error.body)
        let head = HTTPResponse(status: error.status, headerFields: [.contentType: "application/json"])
        _ = HTTP1ResponseHead.write(head, contentLength: body.readableBytes, date: dates.now(), closing: true, into: &buffer)
        buffer.writeImmutableBuffer(body)
        let channel = self.channel
        channel.writeAndFlush(buffer).whenComplete { _ in channel.close(promise: nil) }
    }

    /// The head of an answer, written with its first part of body (or at its end).
    fileprivate func headBytes(_ head: HTTPResponse, contentLength: Int?) -> (ByteBuffer, chunked: Bool, bodiless: Bool) {
        channel.eventLoop.assertInEventLoop()  // the request's task runs on the loop's executor
        var buffer = channel.allocator.buffer(capacity: 256)
        let framing = HTTP1ResponseHead.write(head, contentLength: contentLength, date: dates.now(), closing: closeWhenDone, into: &buffer)
        waiting = false
        streaming = framing.chunked
        if streaming && inputClosed { channel.close(promise: nil) }
        return (buffer, framing.chunked, framing.bodiless)
    }

    fileprivate var outbound: any Channel { channel }

    /// The head of a plain JSON answer without its length (`RunAnswerHandOff.head`); nil when
    /// the connection closes after its answer (that head would have to say so).
    fileprivate func handOffHead(_ status: HTTPResponse.Status) -> String? {
        channel.eventLoop.assertInEventLoop()
        guard !closeWhenDone else { return nil }
        var buffer = channel.allocator.buffer(capacity: 128)
        HTTP1ResponseHead.writeFields(HTTPResponse(status: status, headerFields: [.contentType: "application/json"]), date: dates.now(), into: &buffer)
        return String(buffer: buffer)
    }

    fileprivate var fence: AnswerFence { shared.fence }

    private func armIdleCheck(in delay: TimeAmount) {
        idleCheck = channel.eventLoop.scheduleTask(in: delay) { [self] in
            let idleFor = NIODeadline.now() - lastActivity
            if busy || idleFor < AgentLimits.idleTimeout {
                armIdleCheck(in: busy ? AgentLimits.idleTimeout : AgentLimits.idleTimeout - idleFor)
            } else {
                shared.logger.debug("closing an idle connection")
                channel.close(promise: nil)
            }
        }
    }
}

/// An answer a route writes before it returns (`AgentContext.earlyAnswer`): a run's result
/// goes to the caller before the container's removal and records, which the route then makes
/// on the same loop before the connection reads its next request (`Engine.runContainer`).
/// Only the first answer is written; the route's own return is then dropped.
final class EarlyAnswer: @unchecked Sendable {
    // @unchecked: `send`, `handOff` and the handler's reads run on the connection's event loop
    // (the request's task prefers its executor; `send` called elsewhere writes nothing); a
    // hand-off's state, which its worker's reply may reach from elsewhere, is behind `handing`.
    private let handler: AgentConnectionHandler
    private let headOnly: Bool
    /// The write of the answer, once sent.
    private(set) var written: EventLoopFuture<Void>?
    var sent: Bool { written != nil }

    /// A hand-off of the answer to a worker, from its offer (`handOff`) to its end.
    private struct Handing {
        /// The daemon's duplicate of the connection, sent along with the create; -1 once closed.
        var connection: Int32
        /// Its place in the fence, from when the create goes to the worker (a first run of an
        /// image waits for its parents before that, and holds no one up meanwhile).
        var ticket: UInt64?
        var outcome: HandOffOutcome?
    }
    private let handing = Mutex<Handing?>(nil)

    init(handler: AgentConnectionHandler, headOnly: Bool) {
        self.handler = handler
        self.headOnly = headOnly
    }

    /// The answer handed to the worker that will run the container (`RunAnswerHandOff`), when
    /// the connection's socket is known and the answer would be a plain one; on the loop, before
    /// the engine's call. The connection goes as a duplicate taken now, while it is surely open.
    func handOff(_ status: HTTPResponse.Status) -> RunAnswerHandOff? {
        // Active, on its loop (where NIO closes it): the descriptor is still this connection's.
        guard let socket = handler.socket, !headOnly, written == nil, handler.outbound.eventLoop.inEventLoop, handler.outbound.isActive,
              handing.withLock({ $0 == nil }), let head = handler.handOffHead(status) else { return nil }
        let copy = fcntl(socket, F_DUPFD_CLOEXEC, 0)
        guard copy >= 0 else { return nil }
        let fence = handler.fence
        handing.withLock { $0 = Handing(connection: copy, ticket: nil, outcome: nil) }
        return RunAnswerHandOff(connection: copy, head: head, going: { [self] in
            let ticket = fence.take()
            let taken = handing.withLock { handing -> Bool in
                guard handing != nil, handing?.ticket == nil else { return false }
                handing?.ticket = ticket
                return true
            }
            if !taken { fence.giveBack(ticket) }
        }, resolved: { [self] outcome in
            // The create has its copy (or failed): this one goes. A run not answered by its
            // worker holds up no one any longer; one that was, until its records are made.
            let (connection, release) = handing.withLock { handing -> (Int32, UInt64?) in
                guard var current = handing else { return (-1, nil) }
                let connection = current.connection
                current.connection = -1
                current.outcome = outcome
                let release = outcome == .notAnswered ? current.ticket : nil
                if release != nil { current.ticket = nil }
                handing = current
                return (connection, release)
            }
            if connection >= 0 { close(connection) }
            if let release { fence.giveBack(release) }
        })
    }

    /// Whether a worker wrote the answer (`handOff`).
    var answeredByWorker: Bool {
        handing.withLock { handing in
            if case .answered = handing?.outcome { return true }
            return false
        }
    }

    /// Once the route has returned: what became of a hand-off (nil: none was offered, or the
    /// create never went); its copy of the connection closed and its ticket given back.
    func endHandOff() -> HandOffOutcome? {
        guard let ended = handing.withLock({ handing -> Handing? in defer { handing = nil }; return handing }) else { return nil }
        if ended.connection >= 0 { close(ended.connection) }
        if let ticket = ended.ticket { handler.fence.giveBack(ticket) }
        return ended.outcome
    }

    /// Writes a whole answer (status, JSON body) and flushes it now; a second call does nothing.
    func send(_ status: HTTPResponse.Status, json body: ByteBuffer) {
        let channel = handler.outbound
        // Off the loop (not expected) the route's own answer goes instead, as without this.
        guard channel.eventLoop.inEventLoop, written == nil else { return }
        let head = HTTPResponse(status: status, headerFields: [.contentType: "application/json"])
        var (bytes, _, bodiless) = handler.headBytes(head, contentLength: body.readableBytes)
        if !bodiless && !headOnly {
            var body = body
            bytes.writeBuffer(&body)
        }
        written = channel.writeAndFlush(bytes)
    }
}

/// Writes an answer's body to its connection: the head goes with the first part; a body of
/// known length goes out in one flush at the end, a stream in chunks flushed as they come.
private struct ConnectionBodyWriter: ResponseBodyWriter {
    let handler: AgentConnectionHandler
    let head: HTTPResponse
    let contentLength: Int?
    let headOnly: Bool
    private var started: (chunked: Bool, bodiless: Bool)?
    private var lastWrite: EventLoopFuture<Void>?

    init(handler: AgentConnectionHandler, head: HTTPResponse, contentLength: Int?, headOnly: Bool) {
        self.handler = handler
        self.head = head
        self.contentLength = contentLength
        self.headOnly = headOnly
    }

    private mutating func start() -> ByteBuffer {
        let (bytes, chunked, bodiless) = handler.headBytes(head, contentLength: contentLength)
        started = (chunked, bodiless)
        return bytes
    }

    mutating func write(_ buffer: ByteBuffer) async throws {
        var out = started == nil ? start() : handler.outbound.allocator.buffer(capacity: 0)
        guard let started, !started.bodiless, !headOnly, buffer.readableBytes > 0 else {
            if out.readableBytes > 0 { lastWrite = handler.outbound.write(out) }
            return
        }
        if started.chunked {
            out.writeString(String(buffer.readableBytes, radix: 16))
            out.writeStaticString("\r\n")
            out.writeImmutableBuffer(buffer)
            out.writeStaticString("\r\n")
            try await handler.outbound.writeAndFlush(out).get()
        } else if out.readableBytes > 0 {
            out.writeImmutableBuffer(buffer)
            lastWrite = handler.outbound.write(out)
        } else {
            lastWrite = handler.outbound.write(buffer)
        }
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        var out = started == nil ? start() : handler.outbound.allocator.buffer(capacity: 0)
        if let started, started.chunked, !headOnly { out.writeStaticString("0\r\n\r\n") }
        if out.readableBytes > 0 {
            try await handler.outbound.writeAndFlush(out).get()
        } else {
            handler.outbound.flush()
            try await lastWrite?.get()
        }
    }
}

/// The body of a request whose Content-Length is over the limit: it was not read, and
/// collecting it fails as a too-long body does (so the route answers 413 and records it).
private struct TooLargeBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    struct AsyncIterator: AsyncIteratorProtocol {
        mutating func next() async throws -> ByteBuffer? { throw NIOTooManyBytesError(maxBytes: AgentLimits.maxBodyBytes) }
    }
    func makeAsyncIterator() -> AsyncIterator { AsyncIterator() }
}

/// How a server serves a connection given back by the worker that held it (set once its
/// acceptor is made): the descriptor, and the bytes read of its next request.
final class ServeAgain: Sendable {
    private let serve = Mutex<(@Sendable (Int32, [UInt8]) -> Void)?>(nil)

    func set(_ serve: @escaping @Sendable (Int32, [UInt8]) -> Void) { self.serve.withLock { $0 = serve } }

    func callAsFunction(_ fd: Int32, _ leftover: [UInt8]) {
        guard let serve = serve.withLock({ $0 }) else {
            close(fd)
            return
        }
        serve(fd, leftover)
    }
}
