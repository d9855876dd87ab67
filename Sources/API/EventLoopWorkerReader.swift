import Engine
import Foundation
import NIOCore
import NIOPosix

/// Reads the daemon's connections to its workers on the daemon's event loop (the one its Unix
/// socket's connections are served on), so that a worker's reply wakes the loop the request
/// waits on directly. With a thread per connection, each reply woke that thread, which then
/// woke the loop: one more wake-up, and a core, on every call to a worker (traced).
struct EventLoopWorkerReader: WorkerFrameReader {
    let loop: any EventLoop

    func read(from fd: Int32, shard: Int, frame: @escaping @Sendable (Data) -> Void, ended: @escaping @Sendable (String) -> Void) async throws {
        do {
            _ = try await ClientBootstrap(group: loop)
                .channelOption(ChannelOptions.allowRemoteHalfClosure, value: false)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(WorkerFrameHandler(shard: shard, frame: frame, ended: ended))
                    }
                }
                .withConnectedSocket(fd).get()
        } catch {
            throw EngineError(.failed, "worker \(shard) socket: not read on the event loop: \(error)")
        }
    }
}

/// Cuts a worker's stream into frames (`WorkerWire`: a 4-byte little-endian length, then the
/// payload) and hands each on, in order, on the loop.
private final class WorkerFrameHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let shard: Int
    private let frame: @Sendable (Data) -> Void
    private let ended: @Sendable (String) -> Void
    private var buffered: ByteBuffer?
    private var why = "the worker closed its socket"

    init(shard: Int, frame: @escaping @Sendable (Data) -> Void, ended: @escaping @Sendable (String) -> Void) {
        self.shard = shard
        self.frame = frame
        self.ended = ended
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffered == nil || buffered?.readableBytes == 0 {
            buffered = incoming
        } else {
            buffered!.writeBuffer(&incoming)
        }
        while var buffer = buffered, let length = buffer.getInteger(at: buffer.readerIndex, endianness: .little, as: UInt32.self) {
            guard length <= WorkerWire.maxFrame else {
                why = "worker frame of \(length) bytes is over \(WorkerWire.maxFrame)"
                buffered = nil
                context.close(promise: nil)
                return
            }
            guard buffer.readableBytes >= 4 + Int(length) else { break }
            buffer.moveReaderIndex(forwardBy: 4)
            let payload = buffer.readBytes(length: Int(length)) ?? []
            buffered = buffer
            frame(Data(payload))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let buffered, buffered.readableBytes > 0 { why = "worker stream ended inside a frame" }
        ended(why)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        why = "worker socket read: \(error)"
        context.close(promise: nil)
    }
}
