import Foundation
import Synchronization

/// A small HTTP/1.1 client of the daemon over its Unix socket (or TCP with a token), for the
/// command-line tool, the tests and the benchmarks. Requests run on the calling thread with
/// blocking sockets; idle connections are kept for the next request. The async variants run
/// them on a queue of their own, off the cooperative pool.
public final class AgentClient: Sendable {
    public enum Endpoint: Sendable {
        case unixSocket(String)
        case tcp(host: String, port: Int, token: String?)
    }

    public struct Response: Sendable {
        public let status: Int
        public let headers: [String: String]
        public let body: Data

        public init(status: Int, headers: [String: String], body: Data) {
            (self.status, self.headers, self.body) = (status, headers, body)
        }

        public var text: String { String(decoding: body, as: UTF8.self) }

        public func decode<T: Decodable>(_ type: T.Type) throws -> T { try JSONDecoder().decode(T.self, from: body) }

        /// The error's message when the daemon refused (its JSON body), else the body's text.
        public var errorMessage: String {
            if let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any], let message = object["message"] as? String {
                return message
            }
            return text
        }
    }

    public struct ClientError: Error, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    public let endpoint: Endpoint
    private let idle = Mutex(KeptConnections())
    private let queue = DispatchQueue(label: "vmfork.agent-client", attributes: .concurrent)

    private let channels: AgentChannelClient?

    public init(endpoint: Endpoint) {
        self.endpoint = endpoint
        if case .unixSocket(let path) = endpoint { channels = AgentChannelClient(socketPath: path) } else { channels = nil }
    }

    public convenience init(socketPath: String) {
        self.init(endpoint: .unixSocket(socketPath))
    }

    deinit {
        for fd in idle.withLock({ $0.descriptors }) { close(fd) }
    }

    // MARK: Requests

    /// Sends one request and reads the whole response.
    public func send(_ method: String, _ path: String, body: Data? = nil, contentType: String = "application/json") throws -> Response {
        // A kept connection the daemon closed meanwhile fails before any answer: retry once on a new one.
        if let kept = idle.withLock({ $0.take() }) {
            if let response = try? exchange(kept, method, path, body: body, contentType: contentType) { return response }
            close(kept.fd)
        }
        return try exchange(try connectKept(), method, path, body: body, contentType: contentType)
    }

    /// Over the Unix socket the request and its answer go through NIO on the caller's event
    /// loop (`AgentChannelClient`); over TCP, the blocking client on a queue of its own.
    /// `sent`: told when the request has been written to the daemon's socket, before its answer
    /// (at most once; over TCP, just before it is written).
    public func send(_ method: String, _ path: String, body: Data? = nil, contentType: String = "application/json",
                     sent: (@Sendable () -> Void)? = nil) async throws -> Response {
        if let channels {
            do {
                return try await channels.send(method, path, head: requestHead(method, path, body: body, contentType: contentType, keepAlive: true), body: body,
                                               sent: sent.map(Self.once))
            } catch let error as AgentResponseReader.Failure {
                throw ClientError(description: error.description)
            } catch let error as ClientError {
                throw error
            } catch {
                throw ClientError(description: "cannot reach the vmfork daemon at \(channels.socketPath): \(error) (start it with vmfork serve)")
            }
        }
        return try await withCheckedThrowingContinuation { continuation in
            queue.async {
                sent?()
                continuation.resume(with: Result { try self.send(method, path, body: body, contentType: contentType) })
            }
        }
    }

    /// `body`, run at its first call only (a request retried on a new connection is written twice).
    static func once(_ body: @escaping @Sendable () -> Void) -> @Sendable () -> Void {
        let done = Atomic<Bool>(false)
        return {
            if !done.exchange(true, ordering: .relaxed) { body() }
        }
    }

    /// Sends `value` as JSON.
    public func send<T: Encodable>(_ method: String, _ path: String, json value: T) throws -> Response {
        try send(method, path, body: try JSONEncoder().encode(value))
    }

    public func send<T: Encodable & Sendable>(_ method: String, _ path: String, json value: T) async throws -> Response {
        try await send(method, path, body: try JSONEncoder().encode(value))
    }

    /// A request whose response streams (logs or events with follow), read by an event loop
    /// instead of a blocking thread: `onStatus` once its head is in, `onPiece` with each piece
    /// of its body, then `onEnd` (nil when the answer ended, else why it failed). Returns the
    /// stream's cancel (it closes the connection at once), or nil over TCP, where `stream`
    /// (blocking, on a thread of the caller's) is the way.
    public func streamOnEventLoop(_ method: String, _ path: String, onStatus: @escaping @Sendable (Int) -> Void,
                                  onPiece: @escaping @Sendable (Data) -> Void,
                                  onEnd: @escaping @Sendable ((any Error)?) -> Void) -> (@Sendable () -> Void)? {
        guard let channels else { return nil }
        let head = requestHead(method, path, body: nil, contentType: "application/json", keepAlive: false)
        return channels.stream(head: head, onStatus: onStatus, onPiece: { onPiece(Data($0.readableBytesView)) }, onEnd: { error in
            switch error {
            case nil: onEnd(nil)
            case let failure as AgentResponseReader.Failure: onEnd(ClientError(description: failure.description))
            case let error?: onEnd(ClientError(description: "cannot reach the vmfork daemon at \(channels.socketPath): \(error) (start it with vmfork serve)"))
            }
        })
    }

    /// Sends a request whose response streams (logs or events with follow): `onChunk` gets
    /// each piece of the body as it arrives and returns false to stop. Returns the status.
    /// `onStatus` hears the status as soon as the head is in (a follow that says nothing yet
    /// is still connected).
    /// `cancellation` ends the stream from another thread at once, even while no piece comes.
    @discardableResult
    public func stream(_ method: String, _ path: String, cancellation: StreamCancellation? = nil, onStatus: (Int) -> Void = { _ in },
                       onChunk: (Data) -> Bool) throws -> Int {
        let fd = try connect()
        defer {
            cancellation?.detach()
            close(fd)
        }
        guard cancellation?.attach(fd) ?? true else { throw ClientError(description: "the stream of \(method) \(path) was cancelled") }
        try writeRequest(fd, method, path, body: nil, contentType: "application/json", keepAlive: false)
        var reader = ResponseReader(fd: fd)
        let (status, headers) = try reader.readHead()
        onStatus(status)
        if headers["transfer-encoding"]?.lowercased() == "chunked" {
            while let chunk = try reader.readChunk() {
                if !onChunk(chunk) { break }
            }
        } else if let length = headers["content-length"].flatMap(Int.init) {
            _ = onChunk(try reader.read(exactly: length))
        } else {
            while let piece = try reader.readSome() {
                if !onChunk(piece) { break }
            }
        }
        return status
    }

    /// Ends a `stream` from another thread: `cancel()` shuts its connection down, so that a read
    /// waiting for the next piece (a follow with nothing new) returns at once and the daemon sees
    /// the connection close, instead of at the next piece.
    public final class StreamCancellation: Sendable {
        private struct State {
            var fd: Int32?
            var cancelled = false
        }

        private let state = Mutex(State())

        public init() {}

        public func cancel() {
            state.withLock { state in
                state.cancelled = true
                // Under the lock, so the stream cannot close the descriptor (and another take its number) meanwhile.
                if let fd = state.fd { shutdown(fd, Int32(SHUT_RDWR)) }
            }
        }

        /// False when cancelled already.
        fileprivate func attach(_ fd: Int32) -> Bool {
            state.withLock { state in
                guard !state.cancelled else { return false }
                state.fd = fd
                return true
            }
        }

        fileprivate func detach() { state.withLock { $0.fd = nil } }
    }

    /// Opens connections until `count` are kept idle for the next requests, so that requests
    /// in a burst find them made (a load runner, before its first launch).
    public func openAhead(_ count: Int) throws {
        let more = count - idle.withLock { $0.count }
        guard more > 0 else { return }
        var opened: [KeptConnections.Connection] = []
        do {
            for _ in 0..<more { opened.append(try connectKept()) }
        } catch {
            for connection in opened { close(connection.fd) }
            throw error
        }
        idle.withLock { kept in
            for connection in opened { kept.put(connection) }
        }
    }

    /// Connections kept idle for the next requests.
    public var idleConnections: Int { idle.withLock { $0.count } }

    /// A new connection to the endpoint, with nothing sent: its descriptor is the caller's to
    /// use and close (tests that hold connections open and speak HTTP themselves).
    public func openConnection() throws -> Int32 { try connect() }

    // MARK: Wire

    private func exchange(_ connection: KeptConnections.Connection, _ method: String, _ path: String, body: Data?,
                          contentType: String) throws -> Response {
        let fd = connection.fd
        try writeRequest(fd, method, path, body: body, contentType: contentType, keepAlive: true)
        var reader = ResponseReader(fd: fd)
        let (status, headers) = try reader.readHead()
        var data = Data()
        var reusable = headers["connection"]?.lowercased() != "close"
        if headers["transfer-encoding"]?.lowercased() == "chunked" {
            while let chunk = try reader.readChunk() { data.append(chunk) }
        } else if let length = headers["content-length"].flatMap(Int.init) {
            data = try reader.read(exactly: length)
        } else if status == 204 || status == 304 {
            data = Data()
        } else {
            while let piece = try reader.readSome() { data.append(piece) }
            reusable = false
        }
        if reusable && reader.isDrained { idle.withLock { $0.put(connection) } } else { close(fd) }
        return Response(status: status, headers: headers, body: data)
    }

    private func requestHead(_ method: String, _ path: String, body: Data?, contentType: String, keepAlive: Bool) -> String {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: vmfork\r\n"
        if case .tcp(_, _, let token?) = endpoint { head += "Authorization: Bearer \(token)\r\n" }
        if let body {
            head += "Content-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n"
        } else if method == "POST" || method == "PUT" {
            head += "Content-Length: 0\r\n"
        }
        head += keepAlive ? "\r\n" : "Connection: close\r\n\r\n"
        return head
    }

    private func writeRequest(_ fd: Int32, _ method: String, _ path: String, body: Data?, contentType: String, keepAlive: Bool) throws {
        var bytes = Data(requestHead(method, path, body: body, contentType: contentType, keepAlive: keepAlive).utf8)
        if let body { bytes.append(body) }
        // unsafe: the raw view lives only inside the closure, and send reads within its bounds.
        try bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if written < 0 {
                    if errno == EINTR { continue }
                    throw ClientError(description: "send to the daemon failed: \(String(cString: strerror(errno)))")
                }
                offset += written
            }
        }
    }

    /// A new connection, numbered in the order of those kept.
    private func connectKept() throws -> KeptConnections.Connection {
        let fd = try connect()
        return idle.withLock { $0.opened(fd) }
    }

    private func connect() throws -> Int32 {
        switch endpoint {
        case .unixSocket(let path):
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw ClientError(description: "socket: \(String(cString: strerror(errno)))") }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
                close(fd)
                throw ClientError(description: "socket path \(path) is too long")
            }
            // unsafe: the path is shorter than sun_path (checked above), so the copy and its NUL fit.
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                raw.copyBytes(from: bytes)
                raw[bytes.count] = 0
            }
            // unsafe: sockaddr_un begins with the sockaddr header, and connect reads the length given.
            let result = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard result == 0 else {
                let reason = String(cString: strerror(errno))
                close(fd)
                throw ClientError(description: "cannot reach the vmfork daemon at \(path): \(reason) (start it with vmfork serve)")
            }
            return fd
        case .tcp(let host, let port, _):
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw ClientError(description: "socket: \(String(cString: strerror(errno)))") }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
                close(fd)
                throw ClientError(description: "\(host) is not an IPv4 address")
            }
            // unsafe: sockaddr_in begins with the sockaddr header, and connect reads the length given.
            let result = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard result == 0 else {
                let reason = String(cString: strerror(errno))
                close(fd)
                throw ClientError(description: "cannot reach the vmfork daemon at \(host):\(port): \(reason)")
            }
            return fd
        }
    }
}

/// Reads an HTTP/1.1 response from a blocking socket.
struct ResponseReader {
    let fd: Int32
    private var buffer: [UInt8] = []
    private var start = 0

    init(fd: Int32) { self.fd = fd }

    var isDrained: Bool { start == buffer.count }

    /// Reads more bytes into the buffer; false at end of stream.
    private mutating func fill() throws -> Bool {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        // A scratch area on the stack, not zeroed: a response is usually one read of a few hundred bytes.
        // unsafe: 16 KiB of stack used only inside the closure; only the bytes recv reports are copied out.
        let count = try withUnsafeTemporaryAllocation(byteCount: 16 * 1024, alignment: 1) { scratch -> Int in
            while true {
                // Waits in poll for input: a thread blocked in recv on a Unix stream socket is
                // also woken each time the daemon reads the request (the kernel signals write
                // space on the same wait queue), one more wake-up of this thread per call.
                var input = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                if poll(&input, 1, -1) < 0 {
                    if errno == EINTR { continue }
                    throw AgentClient.ClientError(description: "waiting for the daemon failed: \(String(cString: strerror(errno)))")
                }
                // unsafe: recv writes at most scratch.count bytes into the scratch area, and only those it reports are copied.
                let count = recv(fd, scratch.baseAddress, scratch.count, 0)
                if count < 0 {
                    if errno == EINTR { continue }
                    throw AgentClient.ClientError(description: "reading from the daemon failed: \(String(cString: strerror(errno)))")
                }
                buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: scratch[..<count]))
                return count
            }
        }
        return count > 0
    }

    private mutating func line() throws -> String {
        while true {
            if let end = buffer[start...].firstIndex(of: 0x0A) {
                var bytes = buffer[start..<end]
                if bytes.last == 0x0D { bytes = bytes.dropLast() }
                start = end + 1
                return String(decoding: bytes, as: UTF8.self)
            }
            guard try fill() else { throw AgentClient.ClientError(description: "the daemon closed the connection mid-response") }
        }
    }

    /// The status and headers (names lowercased) of a response, parsed from its bytes once
    /// the blank line ending its head is in: a String per header name and value and none per
    /// line (a load runner reads one head a launch, thousands a second).
    mutating func readHead() throws -> (Int, [String: String]) {
        var end = start
        while true {
            if let found = Self.headEnd(buffer, from: end) {
                end = found
                break
            }
            // Searched up to here (the last bytes again: the blank line may be cut by a read),
            // unless `fill` empties the buffer first (when everything in it was taken).
            let drained = start == buffer.count
            end = max(start, buffer.count - 3)
            guard try fill() else { throw AgentClient.ClientError(description: "the daemon closed the connection mid-response") }
            if drained { end = start }
        }
        // unsafe: start <= end <= buffer.count (headEnd's result), and parseHead copies what it keeps into Strings.
        let head = try buffer.withUnsafeBufferPointer { all in
            try Self.parseHead(UnsafeBufferPointer(rebasing: all[start..<end]))
        }
        start = end
        return head
    }

    /// The index just past the blank line (CRLF CRLF, or LF LF) ending a head in `bytes`,
    /// searching from `from`; nil when it is not there yet.
    static func headEnd(_ bytes: [UInt8], from: Int) -> Int? {
        var index = from
        while index < bytes.count {
            guard bytes[index] == 0x0A else {
                index += 1
                continue
            }
            if index + 1 < bytes.count, bytes[index + 1] == 0x0A { return index + 2 }
            if index + 2 < bytes.count, bytes[index + 1] == 0x0D, bytes[index + 2] == 0x0A { return index + 3 }
            index += 1
        }
        return nil
    }

    /// A head's status and headers, from its bytes (the status line, header lines, the
    /// blank line; each line ending in LF, with or without CR).
    static func parseHead(_ head: UnsafeBufferPointer<UInt8>) throws -> (Int, [String: String]) {
        var lines: [Range<Int>] = []
        var lineStart = 0
        for index in 0..<head.count where head[index] == 0x0A {
            var lineEnd = index
            if lineEnd > lineStart, head[lineEnd - 1] == 0x0D { lineEnd -= 1 }
            lines.append(lineStart..<lineEnd)
            lineStart = index + 1
        }
        guard let statusLine = lines.first else { throw AgentClient.ClientError(description: "not an HTTP response: an empty head") }
        // "HTTP/1.x NNN reason": the status is the three digits after the first space.
        let status = head[statusLine]
        let prefix = Array("HTTP/1.".utf8)
        guard status.count >= 12, status.starts(with: prefix), status[statusLine.lowerBound + 8] == 0x20,
              let code = Int(String(decoding: head[statusLine.lowerBound + 9..<statusLine.lowerBound + 12], as: UTF8.self)),
              status.count == 12 || status[statusLine.lowerBound + 12] == 0x20 else {
            throw AgentClient.ClientError(description: "not an HTTP response: \(String(decoding: status.prefix(200), as: UTF8.self))")
        }
        var headers: [String: String] = Dictionary(minimumCapacity: lines.count)
        func isBlank(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 }
        for line in lines.dropFirst() where !line.isEmpty {
            guard let colon = head[line].firstIndex(of: 0x3A) else { continue }
            var valueStart = colon + 1, valueEnd = line.upperBound
            while valueStart < valueEnd, isBlank(head[valueStart]) { valueStart += 1 }
            while valueEnd > valueStart, isBlank(head[valueEnd - 1]) { valueEnd -= 1 }
            // ASCII lowercase, as header names are compared.
            // unsafe: exactly colon - line.lowerBound bytes are written, the capacity asked for and the count returned.
            let name = String(unsafeUninitializedCapacity: colon - line.lowerBound) { name in
                for offset in 0..<(colon - line.lowerBound) {
                    let byte = head[line.lowerBound + offset]
                    name[offset] = (0x41...0x5A).contains(byte) ? byte | 0x20 : byte
                }
                return colon - line.lowerBound
            }
            headers[name] = String(decoding: head[valueStart..<valueEnd], as: UTF8.self)
        }
        return (code, headers)
    }

    mutating func read(exactly count: Int) throws -> Data {
        while buffer.count - start < count {
            guard try fill() else { throw AgentClient.ClientError(description: "the daemon closed the connection mid-body") }
        }
        defer { start += count }
        return Data(buffer[start..<start + count])
    }

    /// The next chunk of a chunked body; nil after the last.
    mutating func readChunk() throws -> Data? {
        let sizeLine = try line()
        guard let size = Int(sizeLine.split(separator: ";")[0].trimmingCharacters(in: .whitespaces), radix: 16) else {
            throw AgentClient.ClientError(description: "bad chunk size \(sizeLine)")
        }
        if size == 0 {
            while try !line().isEmpty {}
            return nil
        }
        let data = try read(exactly: size)
        _ = try line()
        return data
    }

    mutating func readSome() throws -> Data? {
        if start == buffer.count, try !fill() { return nil }
        defer { start = buffer.count }
        return Data(buffer[start...])
    }
}
