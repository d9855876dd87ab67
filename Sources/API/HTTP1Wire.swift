import Glibc
import HTTPTypes
import NIOCore

/// HTTP/1.1 requests as the agent's own server reads them (RFC 9112), from bytes as they
/// arrive: the head, then a body framed by Content-Length or chunked transfer coding, whole
/// before the request is handed on (the API's bodies are JSON of at most
/// `AgentLimits.maxBodyBytes`). Everything a client sends is checked; what cannot be read
/// is refused with the status and a message naming what was wrong.
struct HTTP1RequestParser {
    /// A request read whole.
    struct Parsed {
        var head: HTTPRequest
        var body: ByteBuffer
        /// The connection ends after the answer (Connection: close, or HTTP/1.0 without keep-alive).
        var closeAfter: Bool
        /// The body was over the limit and was not read: the request goes on with a body that
        /// refuses to be collected (so the route answers 413 and records it), then the connection closes.
        var bodyTooLarge = false
    }

    /// What cannot be read: the answer's status and message; the connection closes after it.
    struct Refusal: Error, Equatable {
        var status: HTTPResponse.Status
        var message: String
    }

    enum Outcome {
        case needMore
        case request(Parsed)
        case refused(Refusal)
    }

    /// The head (request line and fields) may take at most this many bytes.
    static let maxHeadBytes = 64 * 1024
    let maxBodyBytes: Int

    private enum State {
        case head(scanned: Int)
        case body(Parsed, remaining: Int)
        case chunkSize(Parsed)
        case chunkData(Parsed, remaining: Int)
        case chunkEnd(Parsed)
        case trailers(Parsed, scanned: Int)
        /// The body of a request refused as too large, read and dropped so that the client,
        /// still sending it, gets to read the refusal.
        case discard(remaining: Int)
    }

    /// A body over the limit is read and dropped up to this many bytes; beyond it the
    /// connection closes after the refusal without reading it.
    static let maxDiscardedBytes = 64 << 20

    private var state = State.head(scanned: 0)
    /// Set when a head asking `Expect: 100-continue` is read and its body is still to come;
    /// the server answers 100 Continue and clears it.
    var continueWanted = false

    init(maxBodyBytes: Int) { self.maxBodyBytes = maxBodyBytes }

    /// Reads what it can of `buffer` (consuming it) and says whether a request is whole.
    mutating func next(_ buffer: inout ByteBuffer) -> Outcome {
        while true {
            switch state {
            case .head(let scanned):
                guard let end = Self.find(Self.crlfcrlf, in: buffer, from: scanned) else {
                    if buffer.readableBytes > Self.maxHeadBytes {
                        return .refused(Refusal(status: .requestHeaderFieldsTooLarge, message: "the request head is over \(Self.maxHeadBytes) bytes"))
                    }
                    state = .head(scanned: max(0, buffer.readableBytes - 3))
                    return .needMore
                }
                if end > Self.maxHeadBytes {
                    return .refused(Refusal(status: .requestHeaderFieldsTooLarge, message: "the request head is over \(Self.maxHeadBytes) bytes"))
                }
                let headBytes = buffer.readSlice(length: end + 4)!
                let framing: Framing
                var parsed: Parsed
                do {
                    // unsafe: the head's bytes are read only inside the closure, within the slice's readable bytes.
                    (parsed, framing) = try headBytes.withUnsafeReadableBytes { raw in
                        try Self.parseHead(UnsafeRawBufferPointer(rebasing: raw.dropLast(4)), maxBodyBytes: maxBodyBytes)
                    }
                } catch let refusal as Refusal {
                    return .refused(refusal)
                } catch {
                    return .refused(Refusal(status: .badRequest, message: "\(error)"))
                }
                switch framing {
                case .none:
                    state = .head(scanned: 0)
                    return .request(parsed)
                case .tooLarge(let length):
                    parsed.bodyTooLarge = true
                    parsed.closeAfter = true
                    state = length <= Self.maxDiscardedBytes ? .discard(remaining: length) : .head(scanned: 0)
                    return .request(parsed)
                case .length(let length):
                    continueWanted = parsed.head.headerFields[.expect]?.lowercased() == "100-continue" && buffer.readableBytes < length
                    state = .body(parsed, remaining: length)
                case .chunked:
                    continueWanted = parsed.head.headerFields[.expect]?.lowercased() == "100-continue" && buffer.readableBytes == 0
                    state = .chunkSize(parsed)
                }
            case .body(var parsed, let remaining):
                state = .head(scanned: 0)  // the body's buffer has one owner while it grows
                let left = Self.move(remaining, from: &buffer, to: &parsed.body)
                if left > 0 {
                    state = .body(parsed, remaining: left)
                    return .needMore
                }
                return .request(parsed)
            case .chunkSize(let parsed):
                guard let end = Self.find(Self.crlf, in: buffer, from: 0) else {
                    if buffer.readableBytes > 1024 { return .refused(Refusal(status: .badRequest, message: "a chunk-size line is over 1024 bytes")) }
                    return .needMore
                }
                let line = buffer.readSlice(length: end + 2)!.readableBytesView.dropLast(2)
                let digits = line.prefix { $0 != UInt8(ascii: ";") }
                guard !digits.isEmpty, digits.count <= 8, let size = Int(String(decoding: digits, as: UTF8.self), radix: 16), size >= 0 else {
                    return .refused(Refusal(status: .badRequest, message: "a chunk size is not a hexadecimal number of at most 8 digits"))
                }
                if size == 0 {
                    state = .trailers(parsed, scanned: 0)
                } else if parsed.body.readableBytes + size > maxBodyBytes {
                    return .refused(Refusal(status: .contentTooLarge, message: "the request body is over \(maxBodyBytes) bytes"))
                } else {
                    state = .chunkData(parsed, remaining: size)
                }
            case .chunkData(var parsed, let remaining):
                state = .head(scanned: 0)  // the body's buffer has one owner while it grows
                let left = Self.move(remaining, from: &buffer, to: &parsed.body)
                if left > 0 {
                    state = .chunkData(parsed, remaining: left)
                    return .needMore
                }
                state = .chunkEnd(parsed)
            case .chunkEnd(let parsed):
                guard buffer.readableBytes >= 2 else { return .needMore }
                guard buffer.readInteger(as: UInt16.self) == 0x0D0A else {
                    return .refused(Refusal(status: .badRequest, message: "a chunk's data does not end with CRLF"))
                }
                state = .chunkSize(parsed)
            case .discard:
                guard discard(&buffer) else { return .needMore }
            case .trailers(let parsed, let scanned):
                // Trailer fields are read and dropped: no route uses them.
                if buffer.readableBytesView.starts(with: Self.crlf) {
                    buffer.moveReaderIndex(forwardBy: 2)
                    state = .head(scanned: 0)
                    return .request(parsed)
                }
                guard let end = Self.find(Self.crlfcrlf, in: buffer, from: scanned) else {
                    if buffer.readableBytes > Self.maxHeadBytes {
                        return .refused(Refusal(status: .requestHeaderFieldsTooLarge, message: "the request's trailer fields are over \(Self.maxHeadBytes) bytes"))
                    }
                    state = .trailers(parsed, scanned: max(0, buffer.readableBytes - 3))
                    return .needMore
                }
                buffer.moveReaderIndex(forwardBy: end + 4)
                state = .head(scanned: 0)
                return .request(parsed)
            }
        }
    }

    /// Moves up to `count` bytes of the body from the input; returns how many are still to come.
    private static func move(_ count: Int, from buffer: inout ByteBuffer, to body: inout ByteBuffer) -> Int {
        let take = min(count, buffer.readableBytes)
        if take > 0 {
            var slice = buffer.readSlice(length: take)!
            body.writeBuffer(&slice)
        }
        return count - take
    }

    /// Drops what is still to come of a refused body; true when nothing is left to drop.
    mutating func discard(_ buffer: inout ByteBuffer) -> Bool {
        guard case .discard(let remaining) = state else { return true }
        let take = min(remaining, buffer.readableBytes)
        buffer.moveReaderIndex(forwardBy: take)
        state = remaining == take ? .head(scanned: 0) : .discard(remaining: remaining - take)
        return remaining == take
    }

    var isDiscarding: Bool {
        if case .discard = state { return true }
        return false
    }

    /// True between requests (nothing of a next one read yet).
    var isBetweenRequests: Bool {
        if case .head(0) = state { return true }
        return false
    }

    private enum Framing {
        case none
        case length(Int)
        case chunked
        case tooLarge(Int)
    }

    private static let crlf: [UInt8] = [0x0D, 0x0A]
    private static let crlfcrlf: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A]

    /// The offset of `pattern` in the buffer's readable bytes, searching from `start`.
    private static func find(_ pattern: [UInt8], in buffer: ByteBuffer, from start: Int) -> Int? {
        // unsafe: the view of the readable bytes does not leave the closure; callers pass start >= 0 (0, or max(0, ...)).
        buffer.withUnsafeReadableBytes { bytes -> Int? in
            // unsafe: every index read is below bytes.count (the loop's bound leaves room for the pattern).
            guard bytes.count >= pattern.count else { return nil }
            var index = start
            let last = bytes.count - pattern.count
            while index <= last {
                if bytes[index] == pattern[0] {
                    var matched = true
                    for offset in 1..<pattern.count where bytes[index + offset] != pattern[offset] {
                        matched = false
                        break
                    }
                    if matched { return index }
                }
                index += 1
            }
            return nil
        }
    }

    /// tchar of RFC 9110: the characters of a method and a field name.
    private static func isTokenCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "*"),
             UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"),
             UInt8(ascii: "~"): true
        default: false
        }
    }

    private static let host = HTTPField.Name("Host")!

    private static func bad(_ message: String) -> Refusal { Refusal(status: .badRequest, message: message) }

    private static func parseHead(_ bytes: UnsafeRawBufferPointer, maxBodyBytes: Int) throws -> (Parsed, Framing) {
        // Lines as ranges of `bytes`, each without its LF and a CR before it.
        var lines: [Range<Int>] = []
        lines.reserveCapacity(16)
        var lineStart = 0
        for index in 0...bytes.count where index == bytes.count || bytes[index] == 0x0A {
            let end = index > lineStart && bytes[index - 1] == 0x0D ? index - 1 : index
            lines.append(lineStart..<end)
            lineStart = index + 1
        }
        func text(_ range: Range<Int>) -> String { String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self) }
        func all(_ range: Range<Int>, _ test: (UInt8) -> Bool) -> Bool {
            for index in range where !test(bytes[index]) { return false }
            return true
        }
        var next = 0
        // A client may send empty lines before a request line (RFC 9112 2.2).
        while next < lines.count, lines[next].isEmpty { next += 1 }
        guard next < lines.count else { throw bad("the request has no request line") }
        let requestLine = lines[next]
        next += 1
        var spaces: [Int] = []
        for index in requestLine where bytes[index] == UInt8(ascii: " ") { spaces.append(index) }
        guard spaces.count == 2 else { throw bad("the request line is not METHOD TARGET HTTP-VERSION") }
        let methodRange = requestLine.lowerBound..<spaces[0]
        let target = (spaces[0] + 1)..<spaces[1]
        let versionRange = (spaces[1] + 1)..<requestLine.upperBound
        guard !methodRange.isEmpty, all(methodRange, isTokenCharacter) else { throw bad("the request's method is not a token") }
        guard !target.isEmpty, bytes[target.lowerBound] == UInt8(ascii: "/"), all(target, { $0 > 0x20 && $0 < 0x7F }) else {
            throw bad("the request target is not an absolute path of visible ASCII characters")
        }
        let version = text(versionRange)
        let http10: Bool
        switch version {
        case "HTTP/1.1": http10 = false
        case "HTTP/1.0": http10 = true
        default: throw Refusal(status: .httpVersionNotSupported, message: "HTTP version \(version.prefix(16)) is not HTTP/1.1 or HTTP/1.0")
        }
        var fields = HTTPFields()
        fields.reserveCapacity(lines.count - next)
        var authority: String?
        for line in lines[next...] {
            guard !line.isEmpty else { throw bad("an empty line inside the request head") }
            let first = bytes[line.lowerBound]
            if first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") { throw bad("a folded header line (obsolete line folding is refused)") }
            guard let colon = line.first(where: { bytes[$0] == UInt8(ascii: ":") }) else { throw bad("a header line without a colon") }
            let nameRange = line.lowerBound..<colon
            guard !nameRange.isEmpty, all(nameRange, isTokenCharacter), let name = HTTPField.Name(text(nameRange)) else {
                throw bad("a header name is not a token")
            }
            var valueStart = colon + 1, valueEnd = line.upperBound
            while valueStart < valueEnd, bytes[valueStart] == 0x20 || bytes[valueStart] == 0x09 { valueStart += 1 }
            while valueEnd > valueStart, bytes[valueEnd - 1] == 0x20 || bytes[valueEnd - 1] == 0x09 { valueEnd -= 1 }
            guard all(valueStart..<valueEnd, { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else { throw bad("header \(name) has a control character in its value") }
            // Host is the request's authority, as HTTPTypes keeps it (not among the fields).
            if name == Self.host {
                guard authority == nil else { throw bad("more than one Host field") }
                authority = text(valueStart..<valueEnd)
                continue
            }
            fields.append(HTTPField(name: name, value: text(valueStart..<valueEnd)))
        }
        let method = text(methodRange)
        let connection = fields[values: .connection].flatMap { $0.split(separator: ",") }.map { $0.trimmingSpaces.lowercased() }
        let closeAfter = http10 ? !connection.contains("keep-alive") : connection.contains("close")
        let head = HTTPRequest(method: HTTPRequest.Method(method)!, scheme: nil, authority: authority, path: text(target),
                               headerFields: fields)
        var parsed = Parsed(head: head, body: ByteBuffer(), closeAfter: closeAfter)

        let encodings = fields[values: .transferEncoding]
        let lengths = fields[values: .contentLength]
        if !encodings.isEmpty {
            guard lengths.isEmpty else { throw bad("both Transfer-Encoding and Content-Length are given") }
            guard encodings.count == 1, encodings[0].trimmingSpaces.lowercased() == "chunked", !http10 else {
                throw Refusal(status: .notImplemented, message: "transfer coding \(encodings.joined(separator: ", ").prefix(64)) is not supported (only chunked, in HTTP/1.1)")
            }
            return (parsed, .chunked)
        }
        guard let first = lengths.first else { return (parsed, .none) }
        guard lengths.allSatisfy({ $0 == first }), !first.isEmpty, first.utf8.count <= 18, first.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
              let length = Int(first) else {
            throw bad("Content-Length \(first.prefix(32)) is not one decimal number")
        }
        if length > maxBodyBytes {
            parsed.closeAfter = true
            return (parsed, .tooLarge(length))
        }
        return (parsed, length == 0 ? .none : .length(length))
    }
}

private extension StringProtocol {
    var trimmingSpaces: Substring {
        var text = Substring(self)
        while text.first == " " || text.first == "\t" { text.removeFirst() }
        while text.last == " " || text.last == "\t" { text.removeLast() }
        return text
    }
}

/// HTTP/1.1 answers as the agent's own server writes them.
enum HTTP1ResponseHead {
    /// The status line and fields of `response`, with the framing added: Content-Length when the
    /// body's length is known (none for 1xx, 204 and 304), else chunked transfer coding.
    static func write(_ response: HTTPResponse, contentLength: Int?, date: String, closing: Bool, into buffer: inout ByteBuffer) -> (chunked: Bool, bodiless: Bool) {
        let hasLength = writeFields(response, date: date, into: &buffer)
        let status = response.status
        let bodiless = status.kind == .informational || status == .noContent || status == .notModified
        var chunked = false
        if !bodiless && !hasLength {
            if let contentLength {
                buffer.writeStaticString("Content-Length: ")
                buffer.writeString(String(contentLength))
                buffer.writeStaticString("\r\n")
            } else {
                buffer.writeStaticString("Transfer-Encoding: chunked\r\n")
                chunked = true
            }
        }
        if closing { buffer.writeStaticString("Connection: close\r\n") }
        buffer.writeStaticString("\r\n")
        return (chunked, bodiless)
    }

    /// The status line and fields of `response` with Date and Server, each line ending in CRLF,
    /// without the framing and the blank line (what a worker completes, `RunAnswerHandOff`):
    /// whether a Content-Length was among the fields.
    @discardableResult
    static func writeFields(_ response: HTTPResponse, date: String, into buffer: inout ByteBuffer) -> Bool {
        let status = response.status
        buffer.writeStaticString("HTTP/1.1 ")
        buffer.writeString(String(status.code))
        buffer.writeStaticString(" ")
        buffer.writeString(status.reasonPhrase)
        buffer.writeStaticString("\r\n")
        var hasLength = false
        for field in response.headerFields {
            if field.name == .contentLength { hasLength = true }
            if field.name == .transferEncoding || field.name == .connection { continue }
            buffer.writeString(field.name.rawName)
            buffer.writeStaticString(": ")
            buffer.writeString(field.value)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("Date: ")
        buffer.writeString(date)
        buffer.writeStaticString("\r\nServer: vmfork\r\n")
        return hasLength
    }
}
