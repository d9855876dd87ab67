import Foundation

/// Docker's stream framing without a TTY: stdout and stderr share one connection as frames
/// of an 8-byte header [stream (1 stdout, 2 stderr), 0, 0, 0, length as big-endian UInt32]
/// and the bytes. With a TTY the stream is raw (one stream, no headers).
enum StreamKind: UInt8, Sendable {
    case stdout = 1
    case stderr = 2

    /// The agent's name of the stream (GET /v1/containers/{id}/logs?stream=).
    var agentName: String { self == .stdout ? "stdout" : "stderr" }
}

enum StreamFrames {
    static func frame(_ data: Data, _ kind: StreamKind) -> Data {
        var framed = Data(capacity: data.count + 8)
        let size = UInt32(data.count)
        framed.append(contentsOf: [kind.rawValue, 0, 0, 0, UInt8(size >> 24), UInt8(size >> 16 & 0xFF), UInt8(size >> 8 & 0xFF), UInt8(size & 0xFF)])
        framed.append(data)
        return framed
    }

    /// `data` as sent for `kind`: framed without a TTY, as is with one.
    static func encode(_ data: Data, _ kind: StreamKind, tty: Bool) -> Data { tty ? data : frame(data, kind) }

    /// The media type Docker names the stream with.
    static func contentType(tty: Bool) -> String {
        tty ? "application/vnd.docker.raw-stream" : "application/vnd.docker.multiplexed-stream"
    }
}

/// Helpers on the byte streams the VCH relays.
enum ByteStreams {
    /// The pieces of `source`, each changed by `transform`.
    static func map(_ source: AsyncThrowingStream<Data, Error>, _ transform: @escaping @Sendable (Data) -> Data) -> AsyncThrowingStream<Data, Error> {
        merge([source], transform)
    }

    /// The pieces of every source as each arrives (each changed by `transform`); ends when all
    /// have ended, or with the first error.
    static func merge(_ sources: [AsyncThrowingStream<Data, Error>], _ transform: @escaping @Sendable (Data) -> Data = { $0 }) -> AsyncThrowingStream<Data, Error> {
        let (stream, continuation) = AsyncThrowingStream<Data, Error>.makeStream()
        let task = Task {
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for source in sources {
                        group.addTask { for try await piece in source { continuation.yield(transform(piece)) } }
                    }
                    try await group.waitForAll()
                }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// `source`'s pieces; `ended` runs once, as soon as `source` has ended (or the consumer
    /// went away), while the consumer may still be sending the last pieces on.
    static func whenProduced(_ source: AsyncThrowingStream<Data, Error>, _ ended: @escaping @Sendable () async -> Void) -> AsyncThrowingStream<Data, Error> {
        let (stream, continuation) = AsyncThrowingStream<Data, Error>.makeStream()
        let task = Task {
            do {
                for try await piece in source { continuation.yield(piece) }
                await ended()
                continuation.finish()
            } catch {
                await ended()
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// One piece, then the end.
    static func single(_ data: Data) -> AsyncThrowingStream<Data, Error> {
        AsyncThrowingStream { continuation in
            if !data.isEmpty { continuation.yield(data) }
            continuation.finish()
        }
    }

    /// `first`'s pieces, then `second`'s.
    static func concat(_ first: AsyncThrowingStream<Data, Error>, _ second: AsyncThrowingStream<Data, Error>) -> AsyncThrowingStream<Data, Error> {
        let (stream, continuation) = AsyncThrowingStream<Data, Error>.makeStream()
        let task = Task {
            do {
                for try await piece in first { continuation.yield(piece) }
                for try await piece in second { continuation.yield(piece) }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }
}
