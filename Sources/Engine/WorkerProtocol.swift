import CShims
import Foundation
import Store

/// The protocol between the daemon (control plane) and its engine workers (the processes
/// that hold the VMs), over each worker's Unix stream socket, STATE/workers/N.sock (mode 0600).
///
/// Framing: a 4-byte little-endian length, then that many bytes of one JSON object (at most
/// `maxFrame`). Length-prefixed JSON rather than HTTP: one persistent connection carries
/// requests and their replies, matched by id and answered in any order (a `stop` waits for
/// its grace period while forks go on), and pushed events (a container's exit) on the same
/// ordered stream, so an exit is never read after the reply that depends on it; no request
/// line, headers or chunking to parse on a path whose budget is a few microseconds.
///
/// Messages (bodies are the API's own shapes: ContainerSpec, ContainerInfo, ExitInfo,
/// ParentPolicy, ParentInfo, ImageRecord):
/// - request `{"id":N,"op":OP,"body":{...}}` (N > 0), reply `{"id":N,"result":...}` or
///   `{"id":N,"error":{"kind":"notFound","message":"...","field":"id"}}` (kind: EngineError.Kind);
/// - event `{"id":0,"event":"exit","body":{"info":ContainerInfo,...}}` when a container ends,
///   `{"id":0,"event":"event","body":EventRow}` for what the worker's engine did itself
///   (parent.evict, parent.shrink).
///
/// Ops: hello (the caller becomes the one the events go to; returns every container and
/// parent the worker holds, and its poller's thread for the daemon to raise), create, start,
/// stop, kill, stdin, resize, remove, parents, ensureParents, drainParents, removeParents,
/// pressure, processes, stats, memory (a running container's figures), shutdown. A create with `untilEnd` (a run) is answered when its program ends, in
/// the same write as its exit event, or after `WorkerServer.heldAnswerLimit`. The create, its
/// reply, the exit event and the remove are written and read by hand (`WorkerQuick`), the
/// same JSON as their Codable forms.
public enum WorkerWire {
    public static let maxFrame = 64 << 20

    /// Writes one frame with a single write where it fits (the caller serializes writers);
    /// `descriptor` goes along with its first byte (SCM_RIGHTS: the reader gets a duplicate).
    static func writeFrame<Bytes: Collection<UInt8>>(_ fd: Int32, _ payload: Bytes, passing descriptor: Int32? = nil) throws(EngineError) {
        var frame: [UInt8] = []
        frame.reserveCapacity(payload.count + 4)
        append(payload, to: &frame)
        try write(fd, frame, passing: descriptor)
    }

    /// Writes frames one after another with a single write where they fit, so that the reader
    /// is woken once for them all.
    static func writeFrames(_ fd: Int32, _ payloads: [[UInt8]]) throws(EngineError) {
        var frames: [UInt8] = []
        frames.reserveCapacity(payloads.reduce(0) { $0 + $1.count + 4 })
        for payload in payloads { append(payload, to: &frames) }
        try write(fd, frames)
    }

    private static func append<Bytes: Collection<UInt8>>(_ payload: Bytes, to frames: inout [UInt8]) {
        let length = UInt32(payload.count)
        for shift in stride(from: 0, to: 32, by: 8) { frames.append(UInt8(truncatingIfNeeded: length >> shift)) }
        frames.append(contentsOf: payload)
    }

    private static func write(_ fd: Int32, _ frame: [UInt8], passing descriptor: Int32? = nil) throws(EngineError) {
        var offset = 0
        var descriptor = descriptor
        while offset < frame.count {
            // unsafe: offset < count, so the pointer and length stay inside the buffer.
            let written = frame.withUnsafeBytes { bytes in
                let start = bytes.baseAddress! + offset
                guard let passed = descriptor else { return send(fd, start, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
                return cshims_send_with_descriptor(fd, start, UInt(bytes.count - offset), passed)
            }
            if written < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK {
                    // A socket an event loop reads is non-blocking: wait for room.
                    var room = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&room, 1, 1000)
                    continue
                }
                throw EngineError(.failed, "worker socket write: \(String(cString: strerror(errno)))")
            }
            offset += written
            // Sent with the first bytes that went.
            descriptor = nil
        }
    }

    /// Reads one frame; nil at the end of the stream. With `received`, descriptors passed
    /// along (SCM_RIGHTS) go to it, in the order they came; without, the kernel closes them.
    static func readFrame(_ fd: Int32, received: ((Int32) -> Void)? = nil) throws(EngineError) -> Data? {
        var header = [UInt8](repeating: 0, count: 4)
        guard try readFully(fd, &header, count: 4, received: received) else { return nil }
        let length = Int(UInt32(header[0]) | UInt32(header[1]) << 8 | UInt32(header[2]) << 16 | UInt32(header[3]) << 24)
        guard length <= maxFrame else { throw EngineError(.failed, "worker frame of \(length) bytes is over \(maxFrame)") }
        var payload = [UInt8](repeating: 0, count: length)
        guard try readFully(fd, &payload, count: length, received: received) else { throw EngineError(.failed, "worker stream ended inside a frame") }
        return Data(payload)
    }

    private static func readFully(_ fd: Int32, _ buffer: inout [UInt8], count: Int, received: ((Int32) -> Void)?) throws(EngineError) -> Bool {
        var offset = 0
        var passed = [Int32](repeating: -1, count: 8)
        var passedCount: Int32 = 0
        while offset < count {
            // unsafe: offset < count <= buffer.count, so the pointer and length stay inside it;
            // at most passed.count descriptors are stored.
            let got = buffer.withUnsafeMutableBytes { bytes in
                guard received != nil else { return recv(fd, bytes.baseAddress! + offset, count - offset, 0) }
                return cshims_recv_with_descriptors(fd, bytes.baseAddress! + offset, UInt(count - offset), &passed, Int32(passed.count), &passedCount)
            }
            if got > 0, let received { for index in 0..<Int(passedCount) { received(passed[index]) } }
            if got < 0 {
                if errno == EINTR { continue }
                throw EngineError(.failed, "worker socket read: \(String(cString: strerror(errno)))")
            }
            if got == 0 {
                if offset == 0 { return false }
                throw EngineError(.failed, "worker stream ended inside a frame")
            }
            offset += got
        }
        return true
    }

    /// A Unix stream socket connected to `path`.
    static func connect(to path: String) throws(EngineError) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw EngineError(.failed, "socket: \(String(cString: strerror(errno)))") }
        var address = try socketAddress(path)
        // unsafe: the pointer to the local sockaddr_un is used only inside the closure, for connect's call.
        let result = withUnsafePointer(to: &address) {
            // unsafe: sockaddr_un is a sockaddr of the size given.
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else {
            let message = String(cString: strerror(errno))
            close(fd)
            throw EngineError(.unavailable, "cannot connect to \(path): \(message)")
        }
        return fd
    }

    static func socketAddress(_ path: String) throws(EngineError) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else { throw EngineError(.invalid, "socket path \(path) is over \(capacity - 1) bytes", field: "state") }
        // unsafe: the path's bytes are fewer than sun_path's (checked above), so every index is inside it.
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        return address
    }
}

struct WorkerHeader: Decodable {
    let id: UInt64
    let op: String?
    let event: String?
}

struct WorkerRequest<Body: Codable>: Codable {
    var id: UInt64
    var op: String
    var body: Body
}

struct WorkerReply<Result: Codable>: Codable {
    var id: UInt64
    var result: Result?
    var error: WorkerFault?
}

struct WorkerFault: Codable, Sendable {
    var kind: String
    var message: String
    var field: String?

    init(kind: String, message: String, field: String?) {
        (self.kind, self.message, self.field) = (kind, message, field)
    }

    init(_ error: Error) {
        if let engine = error as? EngineError {
            kind = engine.kind.rawValue
            message = engine.message
            field = engine.field
        } else {
            kind = EngineError.Kind.failed.rawValue
            message = "\(error)"
        }
    }

    var engineError: EngineError { EngineError(EngineError.Kind(rawValue: kind) ?? .failed, message, field: field) }
}

struct WorkerEventMessage<Body: Codable>: Codable {
    var id: UInt64 = 0
    var event: String
    var body: Body
}

struct WorkerNothing: Codable, Sendable {}

struct WorkerHello: Codable, Sendable {
    var shard: Int
    var pid: Int32
    var version: String
    var containers: [ContainerInfo]
    var parents: [ParentInfo]
    /// The kernel id of its system-call poller's thread, whose priority the daemon raises
    /// (the worker holds no CAP_SYS_NICE); nil when it has none.
    var pollerThread: Int32? = nil
}

struct WorkerCreate: Codable, Sendable {
    var id: String
    /// Resolved by the daemon: name, fork point and memory set; no pool (placement is the daemon's).
    var spec: ContainerSpec
    /// The daemon's record of the image, when this connection has not sent it before (the
    /// worker keeps it, to make the image's parents again after a restart of its own).
    var image: ImageRecord?
    var start: Bool
    /// A run (created, started and waited for): the worker answers when the program ends, in
    /// the same write as its exit, or once it has run `WorkerServer.heldAnswerLimit`,
    /// whichever comes first, so that the daemon is not woken while a short program runs.
    var untilEnd: Bool? = nil
    /// With `untilEnd`: a run whose container goes once it ended. A run that ends before
    /// the answer goes is answered with its end and output (`WorkerRunEnd`) and removed in
    /// the worker, with no call of the daemon's for either.
    var removeAtEnd: Bool? = nil
    /// With `removeAtEnd`: the caller's connection comes with this frame (SCM_RIGHTS), and a
    /// run answered with its end has its HTTP answer written there by the worker, this the
    /// answer's status line and fields but its length (see `RunAnswerHandOff`).
    var answerHead: String? = nil
}

/// A run's end, sent with its answer when the program ended before the answer went
/// (`WorkerCreate.untilEnd`): its exit, its output when small enough to go along
/// (`WorkerRunEnd.inlineLimit`), and whether the worker removed the container.
struct WorkerRunEnd: Sendable {
    var exit: WorkerExit
    var stdout: [UInt8]?
    var stderr: [UInt8]?
    var removed: Bool
    /// The bytes of the caller's HTTP answer the worker wrote to its connection
    /// (`WorkerCreate.answerHead`), and those it could not write at once (for the daemon).
    var answered: Int? = nil
    var answerRest: [UInt8]? = nil

    /// The most output (stdout and stderr together, bytes) that goes with an answer; a
    /// larger one stays in the container's log files for the daemon to read.
    static let inlineLimit = 64 << 10
}

/// The `takeConnection` op: a caller's connection (its descriptor with the frame) for the
/// worker to serve (`CallerConnections`): `key` names it to both, `actor` is its caller,
/// `leftover` what the daemon had read of its next request.
struct WorkerTakeConnection: Codable, Sendable {
    var key: UInt64
    var actor: String
    var leftover: Data
}
/// The `callerRun` event: a run on a held connection (`CallerConnections`), once it ended
/// (with its exit, and `removed` when the worker removed it), or before, when the daemon syncs
/// while it runs (then again at its end).
struct WorkerCallerRun: Codable, Sendable {
    var key: UInt64
    var actor: String
    /// As it started.
    var info: ContainerInfo
    var exit: WorkerExit? = nil
    var removed = false
}
struct WorkerContainerRef: Codable, Sendable { var id: String }
struct WorkerStop: Codable, Sendable { var id: String; var graceMilliseconds: Int }
struct WorkerKill: Codable, Sendable { var id: String; var signal: Int32 }
struct WorkerStdin: Codable, Sendable { var id: String; var data: Data; var close: Bool }
struct WorkerResize: Codable, Sendable { var id: String; var rows: Int; var columns: Int }
struct WorkerRemove: Codable, Sendable { var id: String; var force: Bool }
/// The `parents` op: every policy the worker holds, or only `id` (none when it holds no such
/// policy), with the sharing figures of those only.
struct WorkerParents: Codable, Sendable {
    var sharing: Bool
    var id: String?
}
/// The `memory` op: the memory figures of these running containers (absent ones it does not run).
struct WorkerMemoryRequest: Codable, Sendable { var ids: [String] }
struct WorkerEnsureParents: Codable, Sendable { var policy: ParentPolicy; var image: ImageRecord }
struct WorkerParentRef: Codable, Sendable { var id: String }
struct WorkerPressure: Codable, Sendable {
    var availableKiB: Int
    var totalKiB: Int
    var stalledPercent: Double?
    var minimumAvailableMiB: Int
    var maximumStalledPercent: Double
}
struct WorkerShutdown: Codable, Sendable { var graceMilliseconds: Int }

/// A container's end, as a worker reports it: its info (state exited) and what KVM counted.
struct WorkerExit: Codable, Sendable {
    var info: ContainerInfo
    var vmExits: UInt64?
    var pageFaults: UInt64?
    var emulatedInstructions: UInt64?
}

extension Duration {
    var milliseconds: Int { Int(components.seconds) * 1000 + Int(components.attoseconds / 1_000_000_000_000_000) }
}

/// The body of `debug.tryCreate` (debug builds): a path to create a file at.
struct WorkerTryCreate: Codable, Sendable {
    var path: String
}
