import Foundation
import HTTPTypes
import Logging
import NIOCore
import NIOHTTPTypes
import Synchronization

/// The connections open at once on one listener and how many it serves: a connection beyond
/// the limit is not served but answered 429 and closed (`ConnectionLimitHandler` for the
/// agent, the VCH's own for the Docker API). Every open connection counts, the long-lived
/// ones too (log and event followers, waits, attaches), until it closes.
public final class ConnectionLimit: Sendable {
    /// Connections served at once.
    public let limit: Int
    private let open = Atomic<Int>(0)

    public init(_ limit: Int) {
        precondition(limit > 0, "a connection limit must be positive")
        self.limit = limit
    }

    /// Counts a new connection in and returns true, or returns false (counting nothing) when
    /// `limit` connections are served already.
    public func admit() -> Bool {
        let now = open.wrappingAdd(1, ordering: .relaxed).newValue
        if now > limit {
            open.wrappingSubtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    /// Counts an admitted connection out (it closed).
    public func release() { open.wrappingSubtract(1, ordering: .relaxed) }

    /// Counts an admitted connection in again, whatever the count (its channel closes, but
    /// it stays open elsewhere: held by an engine worker, `CallerConnections`).
    public func keep() { open.wrappingAdd(1, ordering: .relaxed) }

    /// Connections served now.
    public var served: Int { open.load(ordering: .relaxed) }

    /// Admits the channel's connection, counting it out when it closes; false when refused.
    public func admit(_ channel: any Channel) -> Bool {
        guard admit() else { return false }
        channel.closeFuture.whenComplete { [self] _ in release() }
        return true
    }

    /// How long a refused connection may take to send its first request before it is closed
    /// unanswered (a client that connects and says nothing holds no descriptor for long).
    public static let refusalDeadline = TimeAmount.seconds(5)

    /// The refusal's message: it names the limit and the option that sets it.
    public func refusalMessage(option: String) -> String {
        "over \(limit) connections open at once (\(option) \(limit)); close one and retry"
    }
}

/// The agent's connection limit in each connection's HTTP pipeline (Hummingbird's HTTP/1
/// `additionalChannelHandlers`, after the HTTP codec): a connection under the limit passes
/// every request part on untouched; one over it gets to its first request a 429 with the
/// API's error body (code `too_many_connections`) and `Connection: close`, reaches no route
/// and so changes nothing, and is closed once that request has been read.
final class ConnectionLimitHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundOut = HTTPResponsePart

    private let limit: ConnectionLimit
    private let logger: Logger
    private var refused = false
    /// The 429's write, once it is sent.
    private var answer: EventLoopFuture<Void>?
    private var deadline: Scheduled<Void>?

    init(limit: ConnectionLimit, logger: Logger) {
        self.limit = limit
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        guard !limit.admit(context.channel) else { return }
        refused = true
        logger.debug("connection refused: over the connection limit", metadata: ["limit": "\(limit.limit)"])
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: ConnectionLimit.refusalDeadline) { channel.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard refused else {
            context.fireChannelRead(data)
            return
        }
        switch unwrapInboundIn(data) {
        case .head(let request):
            guard answer == nil else { return }
            let error = APIError(status: .tooManyRequests, code: "too_many_connections",
                                 message: limit.refusalMessage(option: "vmfork serve --max-connections"))
            let body = ByteBuffer(bytes: error.body)
            let head = HTTPResponse(status: error.status, headerFields: [
                .contentType: "application/json", .contentLength: "\(body.readableBytes)", .connection: "close",
            ])
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            if request.method != .head { context.write(wrapOutboundOut(.body(body)), promise: nil) }
            answer = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        case .body:
            break
        case .end:
            // The request is read whole (no unread bytes to turn the close into a reset): close
            // once the answer is out.
            let channel = context.channel
            if let answer {
                answer.whenComplete { _ in channel.close(promise: nil) }
            } else {
                channel.close(promise: nil)
            }
        }
    }
}

/// Closes a connection whose client has stopped sending (its input closed: a TCP FIN, or the
/// end of a Unix socket, which Hummingbird's half-closure keeps from closing the connection)
/// while it waits on an answer with no end in sight:
/// - a streamed answer (no Content-Length: a log or event follow) going out to it, which
///   writes only when there is something new;
/// - a container's wait whose answer has not begun, which comes only when the container ends.
/// Without this such a client that left would hold its connection, and its place under the
/// connection limit, until the next line or event, or the container's end. (A wait's handler
/// still runs to the container's end, holding no connection; a `remove` it carries is done.)
/// Other answers of known length (runs, creates) are left to finish, as Hummingbird does.
final class AbandonedStreamHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private var inputClosed = false
    private var streaming = false
    /// A wait was asked for and its answer's head is not written yet.
    private var waiting = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let request) = unwrapInboundIn(data), request.method == .post, let path = request.path {
            let route = path.split(separator: "?", maxSplits: 1).first ?? ""
            waiting = route.hasPrefix("/v1/containers/") && route.hasSuffix("/wait")
        }
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            inputClosed = true
            if streaming || waiting {
                context.close(promise: nil)
                return
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            waiting = false
            let bodiless = head.status.kind == .informational || head.status == .noContent || head.status == .notModified
            streaming = !bodiless && head.headerFields[.contentLength] == nil
        case .body:
            break
        case .end:
            streaming = false
        }
        context.write(data, promise: promise)
        if streaming, inputClosed { context.close(promise: nil) }
    }
}
