@testable import API
import Engine
import Foundation
import HTTPTypes
import NIOCore
import TestSupport
import Testing

/// The agent's own HTTP/1.1 request reader (`HTTP1RequestParser`), byte by byte where it matters.
@Suite struct HTTP1RequestParserTests {
    /// Everything `text` holds, fed in pieces of `piece` bytes: the requests read and the refusal, if any.
    static func parse(_ text: String, piece: Int = .max, maxBody: Int = 1024) -> (requests: [HTTP1RequestParser.Parsed], refusal: HTTP1RequestParser.Refusal?) {
        var parser = HTTP1RequestParser(maxBodyBytes: maxBody)
        var buffer = ByteBuffer()
        var requests: [HTTP1RequestParser.Parsed] = []
        var bytes = Array(text.utf8)[...]
        while true {
            let take = bytes.prefix(piece)
            bytes = bytes.dropFirst(take.count)
            buffer.writeBytes(take)
            loop: while true {
                switch parser.next(&buffer) {
                case .needMore: break loop
                case .request(let request): requests.append(request)
                case .refused(let refusal): return (requests, refusal)
                }
            }
            if bytes.isEmpty { return (requests, nil) }
        }
    }

    @Test(arguments: [1, 3, 7, Int.max])
    func pipelinedRequestsWithLengthAndChunkedBodiesAreReadWholeInAnyPieces(piece: Int) throws {
        let text = "GET /v1/_ping HTTP/1.1\r\nHost: x\r\n\r\n"
            + "POST /v1/containers?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Thing:  spaced value \t\r\n\r\nhello"
            + "POST /v1/images HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n"
            + "DELETE /v1/images/x HTTP/1.0\r\n\r\n"
        let (requests, refusal) = Self.parse(text, piece: piece)
        #expect(refusal == nil)
        try #require(requests.count == 4)
        #expect(requests[0].head.method == .get && requests[0].head.path == "/v1/_ping" && requests[0].head.authority == "x" && !requests[0].closeAfter)
        #expect(requests[1].head.path == "/v1/containers?x=1" && String(buffer: requests[1].body) == "hello")
        #expect(requests[1].head.headerFields[HTTPField.Name("X-Thing")!] == "spaced value")
        #expect(requests[2].head.method == .post && String(buffer: requests[2].body) == "abcde")
        #expect(requests[3].head.method == .delete && requests[3].closeAfter, "HTTP/1.0 without keep-alive closes")
    }

    @Test func connectionCloseAndKeepAliveAreHonoured() {
        #expect(Self.parse("GET / HTTP/1.1\r\nConnection: Keep-Alive, close\r\n\r\n").requests.first?.closeAfter == true)
        #expect(Self.parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").requests.first?.closeAfter == false)
    }

    @Test(arguments: [
        ("GET /v1/_ping\r\n\r\n", 400, "METHOD TARGET"),
        ("GET  /v1/_ping HTTP/1.1\r\n\r\n", 400, "METHOD TARGET"),
        ("G(T / HTTP/1.1\r\n\r\n", 400, "method"),
        ("GET http://x/ HTTP/1.1\r\n\r\n", 400, "absolute path"),
        ("GET /a\u{1}b HTTP/1.1\r\n\r\n", 400, "absolute path"),
        ("GET / HTTP/2.0\r\n\r\n", 505, "HTTP/2.0"),
        ("GET / HTTP/1.1\r\nNo colon here\r\n\r\n", 400, "colon"),
        ("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400, "token"),
        ("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400, "folded"),
        ("GET / HTTP/1.1\r\nA: b\u{7F}c\r\n\r\n", 400, "control character"),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "Host"),
        ("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400, "Content-Length"),
        ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "Content-Length"),
        ("POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", 400, "Content-Length"),
        ("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400, "Content-Length"),
        ("POST / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "both"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "gzip"),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 501, "HTTP/1.1"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "hexadecimal"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n123456789\r\n", 400, "hexadecimal"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", 400, "CRLF"),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n401\r\n", 413, "over 1024 bytes"),
    ])
    func malformedRequestsAreRefusedNamingWhatWasWrong(text: String, status: Int, mention: String) throws {
        let refusal = try #require(Self.parse(text).refusal, "\(text.debugDescription) was accepted")
        #expect(refusal.status.code == status && refusal.message.contains(mention), "\(text.debugDescription): \(refusal)")
    }

    @Test func anOverlongHeadIsRefusedWithoutWaitingForItsEnd() throws {
        let text = "GET / HTTP/1.1\r\nA: " + String(repeating: "x", count: HTTP1RequestParser.maxHeadBytes + 10)
        let refusal = try #require(Self.parse(text).refusal)
        #expect(refusal.status == .requestHeaderFieldsTooLarge)
    }

    @Test func aBodyOverTheLimitIsHandedOnUnreadAndThenDropped() throws {
        var parser = HTTP1RequestParser(maxBodyBytes: 10)
        var buffer = ByteBuffer(string: "POST /v1/images HTTP/1.1\r\nContent-Length: 25\r\n\r\n0123456789")
        guard case .request(let request) = parser.next(&buffer) else { Issue.record("no request"); return }
        #expect(request.bodyTooLarge && request.closeAfter && request.body.readableBytes == 0)
        #expect(parser.isDiscarding)
        #expect(!parser.discard(&buffer) && buffer.readableBytes == 0)
        buffer.writeString("012345678901234GET / HTTP/1.1\r\n\r\n")
        #expect(parser.discard(&buffer) && !parser.isDiscarding)
        #expect(String(buffer: buffer) == "GET / HTTP/1.1\r\n\r\n", "only the refused body is dropped")
    }

    @Test func expectContinueIsAskedOnlyWhileTheBodyIsStillToCome() {
        var parser = HTTP1RequestParser(maxBodyBytes: 100)
        var buffer = ByteBuffer(string: "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        guard case .needMore = parser.next(&buffer) else { Issue.record("a request without its body"); return }
        #expect(parser.continueWanted)
        var again = HTTP1RequestParser(maxBodyBytes: 100)
        var whole = ByteBuffer(string: "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc")
        guard case .request = again.next(&whole) else { Issue.record("no request"); return }
        #expect(!again.continueWanted)
    }

    @Test func theDateFieldIsAnIMFFixdate() {
        #expect(HTTPDateCache.format(0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(HTTPDateCache.format(1_796_526_000) == "Sun, 06 Dec 2026 03:00:00 GMT")
    }
}

/// The agent's Unix socket server (`AgentHTTPServer`) with a real daemon and raw connections.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"))
struct AgentHTTPServerTests {
    @Test func pipelinedContinuedChunkedAndRefusedRequestsOnTheUnixSocket() throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client

        // Three pipelined requests in one write, answered in order on the one connection.
        let pipelined = HeldConnection(fd: try client.openConnection())
        try pipelined.send("GET /v1/_ping HTTP/1.1\r\n\r\nGET /v1/nosuch HTTP/1.1\r\n\r\nGET /v1/version HTTP/1.1\r\n\r\n")
        var answers: [(Int, String)] = []
        for _ in 0..<3 {
            let head = try pipelined.readHead()
            answers.append((head.status, String(decoding: try pipelined.readBody(head), as: UTF8.self)))
        }
        #expect(answers.map(\.0) == [200, 404, 200])
        #expect(answers[0].1 == #"{"ok":true}"# && answers[1].1.contains("no_route") && answers[2].1.contains("\"api\":\"v1\""))
        // Many in one write (a request's task now begins on the loop where it is read): every
        // one is answered, in order.
        let many = 3_000
        try pipelined.send(String(repeating: "GET /v1/_ping HTTP/1.1\r\n\r\n", count: many))
        var pings = 0
        for _ in 0..<many {
            let head = try pipelined.readHead()
            let body = String(decoding: try pipelined.readBody(head), as: UTF8.self)
            if head.status == 200 && body == #"{"ok":true}"# { pings += 1 }
        }
        #expect(pings == many)

        // Expect: 100-continue gets its 100 before the body is sent; then a chunked body is read whole.
        let continued = HeldConnection(fd: try client.openConnection())
        let pool = #"{"name":"chunky"}"#
        try continued.send("POST /v1/placement/pools HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: \(pool.utf8.count)\r\n\r\n")
        #expect(try continued.readHead().status == 100)
        try continued.send(pool)
        let created = try continued.readHead()
        let createdBody = String(decoding: try continued.readBody(created), as: UTF8.self)
        #expect(created.status == 201, "\(createdBody)")
        let image = #"{"name":"busy","rootfs":"\#(daemon.rootfs.path)","executable":"/bin/busybox"}"#
        let half = image.utf8.count / 2
        try continued.send("POST /v1/images HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                           + "\(String(half, radix: 16))\r\n\(image.prefix(half))\r\n\(String(image.utf8.count - half, radix: 16))\r\n\(image.dropFirst(half))\r\n0\r\n\r\n")
        let imageHead = try continued.readHead()
        let imageBody = String(decoding: try continued.readBody(imageHead), as: UTF8.self)
        #expect(imageHead.status == 201, "\(imageBody)")

        // A malformed request: a 400 naming what was wrong, then the connection closes.
        let malformed = HeldConnection(fd: try client.openConnection())
        try malformed.send("GET /v1/_ping HTTP/1.1\r\nBad Header\r\n\r\n")
        let refusal = try malformed.readHead()
        let refusalBody = String(decoding: try malformed.readBody(refusal), as: UTF8.self)
        #expect(refusal.status == 400 && refusal.headers["connection"] == "close")
        #expect(refusalBody.contains("a header line without a colon"))
        #expect(try malformed.readToEnd().isEmpty)

        // A body over the limit, sent whole: the refusal reaches the client, which is still sending, and the connection closes.
        let large = HeldConnection(fd: try client.openConnection())
        let size = 3 << 20
        let request = Array(("POST /v1/images HTTP/1.1\r\nContent-Length: \(size)\r\n\r\n" + String(repeating: " ", count: size)).utf8)
        let fd = large.fd
        let sender = Thread {
            var offset = 0
            while offset < request.count {
                // unsafe: write reads at most count - offset bytes from the array's own storage.
                let written = request.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, request.count - offset) }
                guard written > 0 else { return }
                offset += written
            }
        }
        sender.start()
        let tooLarge = try large.readHead()
        let tooLargeBody = String(decoding: try large.readBody(tooLarge), as: UTF8.self)
        #expect(tooLarge.status == 413 && tooLargeBody.contains("too_large"))
        #expect(try large.readToEnd().isEmpty)

        // HTTP/1.0 without keep-alive: answered, then closed.
        let old = HeldConnection(fd: try client.openConnection())
        try old.send("GET /v1/_ping HTTP/1.0\r\n\r\n")
        let oldHead = try old.readHead()
        #expect(oldHead.status == 200 && oldHead.headers["connection"] == "close")
        let oldBody = String(decoding: try old.readToEnd(), as: UTF8.self)
        #expect(oldBody == #"{"ok":true}"#)

        // The refused and the accepted requests were recorded under the peer's uid.
        let events = try daemon.events(client)
        #expect(events.contains { ($0["type"] as? String) == "request.refused" && ($0["actor"] as? String) == "uid:\(getuid())" })
        #expect(events.contains { ($0["type"] as? String) == "image.add" && ($0["actor"] as? String) == "uid:\(getuid())" })
    }

    /// An async client's kept connections that the daemon closed (a restart here; its idle
    /// timeout in use) are replaced, not failed on: the call goes out on a new connection.
    @Test func anAsyncClientsKeptConnectionsThatTheDaemonClosedAreReplaced() async throws {
        let daemon = try DaemonFixture()
        try daemon.start()
        defer { daemon.stop() }
        let client = daemon.client
        for round in 0..<3 {
            #expect(try await client.send("GET", "/v1/_ping").status == 200, "round \(round)")
            #expect(try await client.send("GET", "/v1/version").status == 200, "round \(round)")
            daemon.stop()
            try daemon.start()
        }
        #expect(try await client.send("GET", "/v1/_ping").text == #"{"ok":true}"#)
    }
}
