import API
import Foundation
import NIOCore
import NIOHTTP1

/// The pipeline of a connection over the VCH's connection limit (`ConnectionLimit`): HTTP/1.1
/// only, no route behind it. Its first request is answered 429 with Docker's error body
/// (`{"message": ...}`, which the docker CLI prints as "Error response from daemon: ...") and
/// `Connection: close`, and the connection is closed once that request has been read; one
/// that sends nothing within `ConnectionLimit.refusalDeadline` is closed unanswered.
final class ConnectionRefusalHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let message: String
    private var answer: EventLoopFuture<Void>?
    private var deadline: Scheduled<Void>?

    init(message: String) {
        self.message = message
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: ConnectionLimit.refusalDeadline) { channel.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            guard answer == nil else { return }
            let response = DockerError(status: .tooManyRequests, message: message).response
            guard case .full(let body) = response.body else { return }
            var headers = HTTPHeaders(response.headers)
            headers.replaceOrAdd(name: "Content-Length", value: "\(body.count)")
            headers.replaceOrAdd(name: "Connection", value: "close")
            headers.replaceOrAdd(name: "Server", value: "vmfork-vch/\(VirtualContainerHost.version)")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: response.status, headers: headers))), promise: nil)
            if request.method != .HEAD { context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil) }
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

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
