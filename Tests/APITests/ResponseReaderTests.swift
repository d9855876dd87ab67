@testable import API
import Foundation
import Testing

/// The client's HTTP/1.1 response reader (`ResponseReader`), over a socket pair written in
/// pieces: a head cut anywhere, LF-only lines, header names in any case, two responses
/// back to back, and what is no response.
@Suite struct ResponseReaderTests {
    /// Writes `pieces` one by one into a socket pair (each its own send, the reader polling
    /// between them), and reads a head and then a body of `Content-Length`, `count` times.
    static func read(_ pieces: [String], responses count: Int = 1) throws -> [(Int, [String: String], String)] {
        var ends: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &ends) == 0 else { throw POSIXError(.EIO) }
        let writer = ends[1]
        // The descriptors are closed only once the writer is done (a number closed early is
        // reused by the next pair, which the writer would then write into).
        let written = DispatchSemaphore(value: 0)
        defer {
            written.wait()
            close(ends[0])
            close(ends[1])
        }
        let thread = Thread {
            defer { written.signal() }
            for piece in pieces {
                _ = Array(piece.utf8).withUnsafeBytes { send(writer, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                usleep(2_000)
            }
            shutdown(writer, Int32(SHUT_WR))
        }
        thread.start()
        var reader = ResponseReader(fd: ends[0])
        var results: [(Int, [String: String], String)] = []
        for _ in 0..<count {
            let (status, headers) = try reader.readHead()
            let length = headers["content-length"].flatMap { Int($0) } ?? 0
            results.append((status, headers, String(decoding: try reader.read(exactly: length), as: UTF8.self)))
        }
        return results
    }

    @Test func aHeadCutAnywhereIsReadWhole() throws {
        let response = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 7\r\nX-Odd:   spaced\t \r\n\r\n{\"a\":1}"
        // Cut at every offset: the blank line, a CRLF, the status line.
        for cut in 1..<response.utf8.count {
            let bytes = Array(response.utf8)
            let pieces = [String(decoding: bytes[..<cut], as: UTF8.self), String(decoding: bytes[cut...], as: UTF8.self)]
            let (status, headers, body) = try #require(try Self.read(pieces).first)
            #expect(status == 201, "cut at \(cut)")
            #expect(headers == ["content-type": "application/json", "content-length": "7", "x-odd": "spaced"], "cut at \(cut)")
            #expect(body == "{\"a\":1}", "cut at \(cut)")
        }
    }

    @Test func bytePiecesLFOnlyLinesAndTwoResponsesBackToBack() throws {
        let first = "HTTP/1.1 200 OK\nCONTENT-LENGTH: 2\nConnection: keep-alive\n\nok"
        let second = "HTTP/1.0 204\r\n\r\n"
        let pieces = Array(first + second).map { String($0) }
        let results = try Self.read(pieces, responses: 2)
        #expect(results.map(\.0) == [200, 204])
        #expect(results[0].1 == ["content-length": "2", "connection": "keep-alive"] && results[0].2 == "ok")
        #expect(results[1].1.isEmpty && results[1].2 == "")
    }

    @Test func whatIsNoResponseIsRefusedByName() throws {
        for bad in ["SSH-2.0-OpenSSH\r\n\r\n", "HTTP/1.1 2x0 OK\r\n\r\n", "HTTP/1.1 200OK\r\n\r\n", "HTTP/2 200\r\n\r\n"] {
            #expect(throws: AgentClient.ClientError.self, "\(bad)") { _ = try Self.read([bad]) }
            do {
                _ = try Self.read([bad])
            } catch let error as AgentClient.ClientError {
                #expect(error.description.hasPrefix("not an HTTP response"), "\(bad): \(error.description)")
            }
        }
        // Closed before the head ends.
        do {
            _ = try Self.read(["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"])
            Issue.record("a cut head was read")
        } catch let error as AgentClient.ClientError {
            #expect(error.description.contains("closed the connection mid-response"))
        }
    }
}
