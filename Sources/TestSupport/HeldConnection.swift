import Foundation

/// One HTTP/1.1 connection a test holds open and speaks on itself (to fill a server's
/// connection limit, or to see a refusal and the close that follows it). Reads give up after
/// `timeout` seconds, so a server that neither answers nor closes fails the test instead of
/// hanging it.
public final class HeldConnection {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    public struct Head: Sendable {
        public let status: Int
        /// Lower-cased names.
        public let headers: [String: String]
    }

    public let fd: Int32
    private var buffered = Data()
    private var closed = false

    /// Takes `fd` (a connected stream socket) over; it is closed by `close()` or at deinit.
    public init(fd: Int32, timeout: Int = 10) {
        self.fd = fd
        var limit = timeval(tv_sec: timeout, tv_usec: 0)
        // unsafe: setsockopt reads a timeval of the size given from the pointer to `limit`.
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close() }

    /// Opens a connection and has one request answered on it (so the server has admitted
    /// it), then keeps it. A connection the client closed just before may still be counted
    /// for a moment: a 429 is retried for up to 2 s, so only a limit that does not free up fails.
    public static func admitted(open: () throws -> Int32, request: (HeldConnection) throws -> Void) throws -> HeldConnection {
        let deadline = Date().addingTimeInterval(2)
        while true {
            let connection = HeldConnection(fd: try open())
            try request(connection)
            let head = try connection.readHead()
            if head.status == 200 {
                if head.headers["content-length"] != nil { _ = try connection.readBody(head) }
                return connection
            }
            connection.close()
            guard head.status == 429, Date() < deadline else {
                throw Failure(description: "a connection under the limit got \(head.status) (for 2 s)")
            }
            usleep(20_000)
        }
    }

    public func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(fd)
    }

    /// Writes `text` whole.
    public func send(_ text: String) throws {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            // unsafe: write reads at most the slice's count bytes from its own storage.
            let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { throw Failure(description: "write: \(String(cString: strerror(errno)))") }
            bytes = bytes.dropFirst(written)
        }
    }

    /// A request without a body on a kept-alive connection.
    public func sendRequest(_ method: String, _ path: String, headers: [String] = [], body: String? = nil) throws {
        var lines = ["\(method) \(path) HTTP/1.1", "Host: localhost"] + headers
        if let body { lines += ["Content-Type: application/json", "Content-Length: \(body.utf8.count)"] }
        try send(lines.joined(separator: "\r\n") + "\r\n\r\n" + (body ?? ""))
    }

    /// Reads more bytes into the buffer; false at the end of the stream.
    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        var count: Int
        repeat {
            // unsafe: read writes at most the array's count bytes into its own storage.
            count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            // A signal to the test process (another test's child ending, say) is not the connection's failure.
        } while count < 0 && errno == EINTR
        if count < 0 {
            let reason = errno == EAGAIN || errno == EWOULDBLOCK ? "timed out" : String(cString: strerror(errno))
            throw Failure(description: "read: \(reason)")
        }
        buffered.append(contentsOf: chunk[..<count])
        return count > 0
    }

    /// Reads a response's head (status line and headers).
    public func readHead() throws -> Head {
        let end = Data("\r\n\r\n".utf8)
        while buffered.range(of: end) == nil {
            guard try fill() else { throw Failure(description: "the connection ended before a response head: \(String(decoding: buffered, as: UTF8.self))") }
        }
        let range = buffered.range(of: end)!
        let text = String(decoding: buffered[..<range.lowerBound], as: UTF8.self)
        buffered = Data(buffered[range.upperBound...])
        let lines = text.components(separatedBy: "\r\n")
        let words = lines[0].split(separator: " ")
        guard words.count >= 2, let status = Int(words[1]) else { throw Failure(description: "not a status line: \(lines[0])") }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return Head(status: status, headers: headers)
    }

    /// Reads a body of `Content-Length` bytes.
    public func readBody(_ head: Head) throws -> Data {
        guard let length = head.headers["content-length"].flatMap(Int.init) else { throw Failure(description: "the response has no Content-Length") }
        while buffered.count < length {
            guard try fill() else { throw Failure(description: "the connection ended within the body") }
        }
        let body = Data(buffered.prefix(length))
        buffered = Data(buffered.dropFirst(length))
        return body
    }

    /// Reads until the server closes; throws when it does not within the timeout.
    public func readToEnd() throws -> Data {
        while try fill() {}
        defer { buffered = Data() }
        return buffered
    }
}
