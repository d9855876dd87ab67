import API
import Engine
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// One HTTP/1.1 connection of the Docker API: collects each request, lets the VCH answer it
/// on a task, and writes the answer (whole, or piece by piece as a stream produces it).
/// NIO's pipelining handler keeps the next request back until this one's answer has ended.
final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// Its name in the pipeline (the attach upgrade removes it).
    static let name = "vch-http"

    /// Request bodies above this get 413 (create bodies are a few KiB).
    static let maxBodyBytes = 1 << 20

    private let host: VirtualContainerHost
    private let access: AccessCheck
    private var head: HTTPRequestHead?
    private var body = ByteBuffer()
    private var overLimit = false
    private let presence = ClientPresence()
    /// The connection's answers are made on its event loop's thread (`EventLoopExecutor`):
    /// two thread wake-ups fewer per request than on the cooperative pool.
    private var executor: EventLoopExecutor?

    init(host: VirtualContainerHost, access: AccessCheck) {
        self.host = host
        self.access = access
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            if host.tracing { host.logger.debug("request arrived", metadata: ["request": "\(head.method.rawValue) \(head.uri)", "t": Timeline.stamp()]) }
            self.head = head
            body.clear()
            overLimit = false
        case .body(var piece):
            if body.readableBytes + piece.readableBytes > Self.maxBodyBytes { overLimit = true } else { body.writeBuffer(&piece) }
        case .end:
            guard let head else { return }
            if host.tracing { host.logger.debug("request complete", metadata: ["request": "\(head.method.rawValue) \(head.uri)", "t": Timeline.stamp()]) }
            self.head = nil
            let request = DockerRequest(method: head.method, uri: head.uri, headers: head.headers, body: Data(body.readableBytesView))
            let host = self.host
            let access = self.access
            let overLimit = self.overLimit
            let channel = context.channel
            let keepAlive = head.isKeepAlive
            let presence = self.presence
            presence.answerStarts()
            let executor = self.executor ?? EventLoopExecutor(context.eventLoop)
            self.executor = executor
            // Begun here, on the loop, up to its first wait (the translation and the agent
            // call's write): no turn of the loop between the request and its work (48 µs of a
            // create in a trace). An answer that needs no wait is written from within this
            // read; NIO's pipelining handler then hands on a held request, which finds this
            // handler's state already cleared above.
            let task = Task.immediate(executorPreference: executor) {
                if host.tracing { host.logger.debug("answer begins", metadata: ["request": "\(request.method.rawValue) \(request.path)", "t": Timeline.stamp()]) }
                let response = await host.answer(request, access: access, overLimit: overLimit)
                await ResponseWriter.write(response, to: channel, keepAlive: keepAlive, head: request.method == .HEAD,
                                           trace: host.tracing ? (host.logger, "\(request.method.rawValue) \(request.path)") : nil,
                                           presence: presence)
            }
            channel.closeFuture.whenComplete { _ in task.cancel() }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The client stopped sending (a FIN on TCP; the connection allows half-closure for
        // attaches, which remove this handler first): see `ClientPresence`.
        if case ChannelEvent.inputClosed = event, presence.inputClosed() {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // An upgrade the attach upgrader declined: the request goes on to be answered here.
        if error is AttachUpgrader.Declined { return }
        context.close(promise: nil)
    }
}

extension VirtualContainerHost {
    /// The answer to a request that reached the handler: refused without the token or when too
    /// large, else the VCH's.
    func answer(_ request: DockerRequest, access: AccessCheck, overLimit: Bool) async -> DockerResponse {
        if let refusal = access.refusal(request.headers) { return refusal.response }
        if overLimit { return DockerError(status: .payloadTooLarge, message: "the request body is over \(HTTPHandler.maxBodyBytes) bytes").response }
        return await handle(request)
    }
}

/// Whether a connection's client has stopped sending (its input closed: a FIN on TCP, which
/// the connection allows for attaches) and what is being answered then. An idle connection
/// closes at once; a streamed answer (events, logs with follow, pulls) too, since it writes
/// only when there is something new and would otherwise hold the connection, and its place
/// under the connection limit, until then; an answer of known length finishes first.
final class ClientPresence: Sendable {
    // Each side stores its own flag, then loads the other's (sequentially consistent), so that
    // of an input closing and an answer changing state at once, at least one sees the other.
    private let closedInput = Atomic<Bool>(false)
    private let answering = Atomic<Bool>(false)
    private let streaming = Atomic<Bool>(false)

    /// A whole request is in and goes to be answered (on the connection's event loop).
    func answerStarts() { answering.store(true, ordering: .sequentiallyConsistent) }

    /// The input closed (on the event loop): true when the connection is to close now.
    func inputClosed() -> Bool {
        closedInput.store(true, ordering: .sequentiallyConsistent)
        return !answering.load(ordering: .sequentiallyConsistent) || streaming.load(ordering: .sequentiallyConsistent)
    }

    /// Before a stream's head: false when the client has stopped sending already.
    func streamStarts() -> Bool {
        streaming.store(true, ordering: .sequentiallyConsistent)
        return !closedInput.load(ordering: .sequentiallyConsistent)
    }

    /// After an answer: true when the client has stopped sending (close the connection).
    func answerEnded() -> Bool {
        streaming.store(false, ordering: .sequentiallyConsistent)
        answering.store(false, ordering: .sequentiallyConsistent)
        return closedInput.load(ordering: .sequentiallyConsistent)
    }
}

/// First in every connection's pipeline, doing nothing itself: its context lets a stream ask
/// for a read of the socket past NIO's pipelining handler, which reads nothing more while an
/// answer is going out (it holds the next request back). With that read outstanding, a
/// client's FIN reaches `HTTPHandler` as input closed while its stream is open.
final class ReadAheadHandler: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = NIOAny
    static let name = "vch-read-ahead"

    /// Asks for one read of `channel`'s socket from the front of its pipeline.
    static func read(_ channel: any Channel) {
        channel.eventLoop.execute {
            (try? channel.pipeline.syncOperations.context(name: name))?.read()
        }
    }
}

/// Writes an answer to a connection.
enum ResponseWriter {
    static func write(_ response: DockerResponse, to channel: any Channel, keepAlive: Bool, head: Bool, trace: (Logger, String)? = nil,
                      presence: ClientPresence? = nil) async {
        var headers = HTTPHeaders(response.headers)
        headers.replaceOrAdd(name: "Server", value: "vmfork-vch/\(VirtualContainerHost.version)")
        headers.replaceOrAdd(name: "Date", value: HTTPDateCache.format(time(nil)))
        switch response.body {
        case .empty:
            if response.status != .noContent && response.status != .notModified { headers.replaceOrAdd(name: "Content-Length", value: "0") }
        case .full(let data):
            headers.replaceOrAdd(name: "Content-Length", value: "\(data.count)")
        case .stream:
            headers.replaceOrAdd(name: "Transfer-Encoding", value: "chunked")
        }
        if !keepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
        do {
            let responseHead = HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers))
            switch response.body {
            case .empty, .full:
                // A whole answer goes out in one flush (one write to the socket).
                channel.write(responseHead, promise: nil)
                if case .full(let data) = response.body, !head { channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: data))), promise: nil) }
                try await channel.writeAndFlush(HTTPServerResponsePart.end(nil))
                if let (logger, request) = trace { logger.debug("answer sent", metadata: ["request": "\(request)", "status": "\(response.status.code)", "t": Timeline.stamp()]) }
            case .stream(let pieces):
                if let presence, !presence.streamStarts() {
                    try? await channel.close()
                    return
                }
                // The head at once (the docker CLI sends start only once its wait has it).
                try await channel.writeAndFlush(responseHead)
                if presence != nil { ReadAheadHandler.read(channel) }
                if let (logger, request) = trace { logger.debug("answer head sent", metadata: ["request": "\(request)", "status": "\(response.status.code)", "t": Timeline.stamp()]) }
                do {
                    for try await piece in pieces where !piece.isEmpty {
                        try await channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: piece))))
                    }
                } catch is CancellationError {
                    return
                } catch {
                    // The status is sent: a stream that fails ends early (Docker's daemon does the same).
                }
                try await channel.writeAndFlush(HTTPServerResponsePart.end(nil))
                if let (logger, request) = trace { logger.debug("answer end sent", metadata: ["request": "\(request)", "t": Timeline.stamp()]) }
            }
            if presence?.answerEnded() == true || !keepAlive { try await channel.close() }
        } catch {
            try? await channel.close()
        }
    }
}

/// Who may call: on TCP every request needs "Authorization: Bearer TOKEN" (the docker CLI
/// sends it from config.json's HttpHeaders); the Unix socket's mode keeps others out.
struct AccessCheck: Sendable {
    let token: String?

    func refusal(_ headers: HTTPHeaders) -> DockerError? {
        guard let token else { return nil }
        let presented = headers.first(name: "Authorization").flatMap { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : nil }
        guard let presented else {
            return DockerError(status: .unauthorized, message: "missing bearer token: this VCH's TCP endpoint needs Authorization: Bearer TOKEN (docker config.json HttpHeaders)")
        }
        let (given, expected) = (Array(presented.utf8), Array(token.utf8))
        var difference = UInt8(given.count == expected.count ? 0 : 1)
        for index in expected.indices where index < given.count { difference |= given[index] ^ expected[index] }
        return difference == 0 ? nil : DockerError(status: .unauthorized, message: "wrong bearer token")
    }
}
