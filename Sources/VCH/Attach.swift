import Engine
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

/// `POST /containers/{id}/attach` with `Upgrade: tcp`: the answer is 101 Switching Protocols,
/// then the connection is a raw byte stream both ways: the container's output out (framed
/// without a TTY), its standard input in, until the output ends. One upgrader per connection
/// (NIO upgrades only a connection's first request, which is how the docker CLI attaches).
final class AttachUpgrader: HTTPServerProtocolUpgrader, Sendable {
    /// Not an attach request, or not allowed: it goes on to the ordinary handler, which answers it.
    struct Declined: Error {}

    let supportedProtocol = "tcp"
    let requiredUpgradeHeaders: [String] = []
    private let host: VirtualContainerHost
    private let access: AccessCheck
    private let session = SessionSlot()

    init(host: VirtualContainerHost, access: AccessCheck) {
        self.host = host
        self.access = access
    }

    func buildUpgradeResponse(channel: any Channel, upgradeRequest: HTTPRequestHead, initialResponseHeaders: HTTPHeaders) -> EventLoopFuture<HTTPHeaders> {
        let request = DockerRequest(method: upgradeRequest.method, uri: upgradeRequest.uri, headers: upgradeRequest.headers, body: Data())
        let segments = request.path.split(separator: "/")
        guard request.method == .POST, segments.count == 3, segments[0] == "containers", segments[2] == "attach",
              access.refusal(request.headers) == nil else {
            return channel.eventLoop.makeFailedFuture(Declined())
        }
        let promise = channel.eventLoop.makePromise(of: HTTPHeaders.self)
        let (host, session) = (self.host, self.session)
        promise.completeWithTask {
            // Any refusal (no such container, a stopped one) is answered as an ordinary request.
            if host.tracing { host.logger.debug("attach arrived", metadata: ["request": "\(request.path)", "t": Timeline.stamp()]) }
            guard let made = try? await host.attachSession(String(segments[1]), request) else { throw Declined() }
            session.set(made)
            var headers = initialResponseHeaders
            headers.add(name: "Content-Type", value: StreamFrames.contentType(tty: made.tty))
            return headers
        }
        return promise.futureResult
    }

    func upgrade(context: ChannelHandlerContext, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<Void> {
        guard let made = session.get() else { return context.eventLoop.makeFailedFuture(Declined()) }
        do {
            try context.pipeline.syncOperations.addHandler(AttachStreamHandler(session: made))
        } catch {
            return context.eventLoop.makeFailedFuture(error)
        }
        if host.tracing { host.logger.debug("attach upgraded", metadata: ["container": "\(made.id)", "t": Timeline.stamp()]) }
        made.run(on: context.channel)
        return context.eventLoop.makeSucceededVoidFuture()
    }
}

/// The session an upgrade prepared, handed from the 101's preparation to the upgrade.
final class SessionSlot: Sendable {
    private let slot = Mutex<AttachSession?>(nil)
    func set(_ session: AttachSession) { slot.withLock { $0 = session } }
    func get() -> AttachSession? { slot.withLock { $0 } }
}

/// One attached client: its output pump and its standard input's writer.
final class AttachSession: Sendable {
    let id: String
    let tty: Bool
    private let output: AsyncThrowingStream<Data, Error>
    private let input: AsyncStream<Data>
    private let inputContinuation: AsyncStream<Data>.Continuation
    private let forwardsInput: Bool
    private let closesInput: Bool
    private let host: VirtualContainerHost

    init(host: VirtualContainerHost, id: String, tty: Bool, output: AsyncThrowingStream<Data, Error>, forwardsInput: Bool, closesInput: Bool) {
        self.host = host
        self.id = id
        self.tty = tty
        self.output = output
        self.forwardsInput = forwardsInput
        self.closesInput = closesInput
        (input, inputContinuation) = AsyncStream<Data>.makeStream()
    }

    /// Bytes the client sent (its standard input).
    func received(_ data: Data) { inputContinuation.yield(data) }

    /// The client closed its sending half (end of its standard input).
    func inputEnded() { inputContinuation.finish() }

    func run(on channel: any Channel) {
        let (output, input, host, id) = (self.output, self.input, self.host, self.id)
        let (forwardsInput, closesInput) = (self.forwardsInput, self.closesInput)
        let pump = Task {
            do {
                for try await piece in output where !piece.isEmpty { try await channel.writeAndFlush(ByteBuffer(bytes: piece)) }
            } catch {}
            if host.tracing { host.logger.debug("attach output sent", metadata: ["container": "\(id)", "t": Timeline.stamp()]) }
            try? await channel.close()
        }
        let writer = Task {
            for await data in input where forwardsInput {
                // A container that ended has no reader: what is left is dropped.
                guard (try? await host.agent.call("POST", "/v1/containers/\(id)/stdin", body: data)) != nil else { break }
            }
            if forwardsInput, closesInput, !Task.isCancelled { _ = try? await host.agent.call("POST", "/v1/containers/\(id)/stdin?close=true") }
        }
        channel.closeFuture.whenComplete { [inputContinuation] _ in
            pump.cancel()
            inputContinuation.finish()
            _ = writer
        }
    }
}

/// The raw stream after the upgrade: what the client sends is its standard input.
final class AttachStreamHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    let session: AttachSession

    init(session: AttachSession) { self.session = session }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        session.received(Data(buffer.readableBytesView))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event { session.inputEnded() }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

extension VirtualContainerHost {
    /// Prepares an attach: the container (404 when not this VCH's), its output from the start
    /// (a container not yet started, or logs=1) or from now, and whether its input is forwarded.
    func attachSession(_ reference: String, _ request: DockerRequest) async throws -> AttachSession {
        let info = try await resolve(reference, justCreated: true)
        let logs = try request.bool("logs")
        let stream = try request.bool("stream")
        if info.state == .exited, !logs { throw DockerError.conflict("You cannot attach to a stopped container, start it first") }
        var options = OutputOptions()
        options.stdout = try request.bool("stdout")
        options.stderr = try request.bool("stderr")
        options.follow = stream
        options.fromStart = logs || info.state == .created
        let openStdin = info.labels[Label.openStdin] == "1"
        await watch.attachBegan(info.id)
        let output: AsyncThrowingStream<Data, Error>
        do {
            // Once the agent's output is read (not yet sent on), an --rm removal may begin.
            let (watch, id, tracing, logger) = (self.watch, info.id, self.tracing, self.logger)
            output = ByteStreams.whenProduced(try await self.output(info, options)) {
                if tracing { logger.debug("attach output read", metadata: ["container": "\(id)", "t": Timeline.stamp()]) }
                await watch.attachEnded(id)
            }
        } catch {
            await watch.attachEnded(info.id)
            throw error
        }
        let forwardsInput = try openStdin && request.bool("stdin")
        // Recorded once the stream's start is fixed (the log's length read): output written
        // after this record reaches the client, which is what a caller waiting for it relies on.
        audit("POST \(request.path)", status: 101)
        return AttachSession(host: self, id: info.id, tty: info.labels[Label.tty] == "1", output: output,
                             forwardsInput: forwardsInput, closesInput: info.labels[Label.stdinOnce] == "1")
    }
}
