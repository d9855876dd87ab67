import Engine
import Foundation
import HTTPTypes
import Hummingbird
import Synchronization

/// The TCP listener's bearer tokens: STATE/api-token, made at the daemon's first start
/// (mode 0600), one "NAME TOKEN" a line. The event log names the token, never its value.
public struct TokenFile: Sendable {
    public static let fileName = "api-token"
    public let tokens: [(name: String, value: String)]

    /// Reads the folder's token file, making it with one random token named "default" first.
    public static func loadOrCreate(in folder: URL) throws -> TokenFile {
        let path = folder.appendingPathComponent(fileName).path
        if !FileManager.default.fileExists(atPath: path) {
            var bytes = [UInt8](repeating: 0, count: 32)
            var generator = SystemRandomNumberGenerator()
            for index in bytes.indices { bytes[index] = generator.next() }
            let token = bytes.map { String(format: "%02x", $0) }.joined()
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw EngineError(.failed, "cannot create \(path): \(String(cString: strerror(errno)))") }
            let line = Array("default \(token)\n".utf8)
            let written = write(fd, line, line.count)
            close(fd)
            guard written == line.count else { throw EngineError(.failed, "cannot write \(path)") }
        }
        return try load(path: path)
    }

    public static func load(path: String) throws -> TokenFile {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let tokens = text.split(separator: "\n").compactMap { line -> (String, String)? in
            let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
            return parts.count == 2 ? (parts[0], parts[1].trimmingCharacters(in: .whitespaces)) : nil
        }
        return TokenFile(tokens: tokens)
    }

    /// The name of the token `presented` is, compared in constant time per token.
    public func name(of presented: String) -> String? {
        let given = Array(presented.utf8)
        for token in tokens {
            let expected = Array(token.value.utf8)
            guard expected.count == given.count else { continue }
            var difference: UInt8 = 0
            for index in expected.indices { difference |= expected[index] ^ given[index] }
            if difference == 0 { return token.name }
        }
        return nil
    }
}

/// On TCP: every request needs "Authorization: Bearer TOKEN"; a missing or wrong one gets
/// 401 and is recorded in the event log.
struct BearerTokenMiddleware: RouterMiddleware {
    typealias Context = AgentContext
    let tokens: TokenFile
    let engine: Engine
    /// The web front end's path prefix ("/ui"): it checks its own session cookie against the
    /// same tokens, so its pages (and its sign-in form) pass here.
    var frontEndPrefix: String? = nil

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let prefix = frontEndPrefix, request.uri.path == prefix || request.uri.path.hasPrefix(prefix + "/") || request.uri.path == "/" {
            return try await next(request, context)
        }
        let header = request.headers[.authorization]
        let presented = header.flatMap { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : nil }
        guard let presented, let name = tokens.name(of: presented) else {
            let remote = context.channel?.remoteAddress.map { "\($0)" } ?? "?"
            let reason = header == nil ? "missing bearer token" : "wrong bearer token"
            engine.record("auth.refused", subject: "\(request.method.rawValue) \(request.uri.path)", actor: "tcp:\(remote)", result: reason)
            var response = APIError(status: .unauthorized, code: "unauthorized",
                                    message: "\(reason): send Authorization: Bearer TOKEN (the daemon's state folder holds it in \(TokenFile.fileName))").response
            response.headers[HTTPField.Name("WWW-Authenticate")!] = "Bearer"
            return response
        }
        var context = context
        context.actor = "token:\(name)"
        return try await next(request, context)
    }
}
