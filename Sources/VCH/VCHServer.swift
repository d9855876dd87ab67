import API
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// The VCH's listener: HTTP/1.1 on a Unix socket (mode 0600) or on TCP with a bearer token,
/// each connection with NIO's HTTP pipeline, the attach upgrader in front of the handler.
public final class VCHServer: Sendable {
    public enum Listen: Sendable, CustomStringConvertible {
        case unix(path: String)
        case tcp(host: String, port: Int)

        /// "unix:///PATH" or "tcp://HOST:PORT" (Docker's -H spelling).
        public init(parsing text: String) throws {
            if text.hasPrefix("unix://") {
                let path = String(text.dropFirst(7))
                guard !path.isEmpty else { throw DockerError.badRequest("--listen \(text) names no socket path") }
                self = .unix(path: path)
            } else if text.hasPrefix("tcp://") {
                let rest = text.dropFirst(6)
                guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]), (0...65535).contains(port),
                      !rest[..<colon].isEmpty else {
                    throw DockerError.badRequest("--listen \(text) is not tcp://HOST:PORT")
                }
                self = .tcp(host: String(rest[..<colon]), port: port)
            } else {
                throw DockerError.badRequest("--listen \(text) is neither unix://PATH nor tcp://HOST:PORT")
            }
        }

        public var description: String {
            switch self {
            case .unix(let path): "unix://\(path)"
            case .tcp(let host, let port): "tcp://\(host):\(port)"
            }
        }
    }

    private let group: MultiThreadedEventLoopGroup
    private let channel: any Channel
    private let host: VirtualContainerHost
    public let logger: Logger

    /// Connections served at once by default (`vmfork vch serve --max-connections`).
    public static let defaultMaxConnections = 1024

    /// Binds and starts answering. `token` is required on TCP. Connections over
    /// `maxConnections` open at once (attaches, log and event followers and waits included)
    /// are answered 429 and closed.
    public init(host: VirtualContainerHost, listen: Listen, token: String?, maxConnections: Int = VCHServer.defaultMaxConnections,
                logger: Logger) async throws {
        if case .tcp = listen, token == nil { throw DockerError.badRequest("a TCP listener needs a token") }
        guard maxConnections > 0 else { throw DockerError.badRequest("--max-connections \(maxConnections) must be at least 1") }
        let access = AccessCheck(token: token)
        let limit = ConnectionLimit(maxConnections)
        let refusal = limit.refusalMessage(option: "vmfork vch serve --max-connections")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    // Counted until the connection closes, an attach's raw stream after its 101 too.
                    guard limit.admit(channel) else {
                        logger.debug("connection refused: over the connection limit", metadata: ["vch": "\(host.name)", "limit": "\(limit.limit)"])
                        try sync.configureHTTPServerPipeline()
                        try sync.addHandler(ConnectionRefusalHandler(message: refusal))
                        return
                    }
                    let handler = HTTPHandler(host: host, access: access)
                    let upgrader = AttachUpgrader(host: host, access: access)
                    try sync.addHandler(ReadAheadHandler(), name: ReadAheadHandler.name, position: .first)
                    try sync.configureHTTPServerPipeline(withServerUpgrade: (upgraders: [upgrader], completionHandler: { context in
                        // After the 101 the connection is raw bytes: the HTTP handler leaves.
                        context.pipeline.removeHandler(name: HTTPHandler.name, promise: nil)
                    }))
                    try sync.addHandler(handler, name: HTTPHandler.name)
                }
            }
        if case .tcp = listen {
            // No Nagle delay on small answers (a 101 then a frame, a wait's status line).
            bootstrap = bootstrap.childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
        }
        do {
            switch listen {
            case .unix(let path):
                channel = try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
                chmod(path, 0o600)
            case .tcp(let address, let port):
                channel = try await bootstrap.bind(host: address, port: port).get()
            }
        } catch {
            try? await group.shutdownGracefully()
            throw DockerError(status: .internalServerError, message: "cannot listen on \(listen): \(error)")
        }
        self.group = group
        self.logger = logger
        self.host = host
        host.feed.start()
        logger.info("VCH listening", metadata: ["vch": "\(host.name)", "pool": "\(host.configuration.pool)", "listen": "\(listen)",
                                                "address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
    }

    /// The TCP port bound (for tcp://HOST:0).
    public var port: Int? { channel.localAddress?.port }

    /// Stops accepting and closes the connections.
    public func close() async {
        host.feed.stop()
        try? await channel.close()
        try? await group.shutdownGracefully()
    }
}
