import Foundation
import NIOHTTP1

/// One Docker Engine API request, whole (bodies are small JSON), with the `/v1.NN` prefix
/// taken off its path.
struct DockerRequest: Sendable {
    let method: HTTPMethod
    /// The path without the version prefix, e.g. "/containers/create".
    let path: String
    /// The API version the client asked for ("1.43"), nil when unversioned.
    let version: String?
    let query: [String: [String]]
    let headers: HTTPHeaders
    let body: Data

    init(method: HTTPMethod, uri: String, headers: HTTPHeaders, body: Data) {
        self.method = method
        self.headers = headers
        self.body = body
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        var path = String(parts[0])
        var version: String?
        if path.hasPrefix("/v"), let slash = path.dropFirst(2).firstIndex(of: "/") {
            let candidate = path[path.index(path.startIndex, offsetBy: 2)..<slash]
            if !candidate.isEmpty, candidate.allSatisfy({ $0.isNumber || $0 == "." }) {
                version = String(candidate)
                path = String(path[slash...])
            }
        }
        self.path = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        self.version = version
        var query: [String: [String]] = [:]
        if parts.count == 2 {
            for pair in parts[1].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let key = Self.decode(kv[0])
                query[key, default: []].append(kv.count == 2 ? Self.decode(kv[1]) : "")
            }
        }
        self.query = query
    }

    private static func decode(_ text: Substring) -> String {
        let spaced = text.replacingOccurrences(of: "+", with: " ")
        return spaced.removingPercentEncoding ?? spaced
    }

    /// The query's last value of `name`.
    func string(_ name: String) -> String? { query[name]?.last }

    /// Docker's booleans: "1", "true", "True" are true; "0", "false", "" are false.
    func bool(_ name: String, default value: Bool = false) throws -> Bool {
        guard let text = string(name) else { return value }
        switch text.lowercased() {
        case "1", "true", "yes": return true
        case "0", "false", "no", "": return false
        default: throw DockerError.badRequest("query parameter \(name)=\(text) is not a boolean")
        }
    }

    func int(_ name: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let text = string(name), !text.isEmpty else { return nil }
        guard let value = Int(text), range.contains(value) else {
            throw DockerError.badRequest("query parameter \(name)=\(text) is not an integer in \(range)")
        }
        return value
    }

    /// The body as `T`; a clear 400 naming the field when it does not decode.
    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        guard !body.isEmpty else { throw DockerError.badRequest("the request needs a JSON body") }
        do {
            return try JSONDecoder().decode(T.self, from: body)
        } catch let error as DecodingError {
            throw DockerError.badRequest("the JSON body is malformed: \(DockerError.describe(error))")
        }
    }

    /// Docker's `filters` query parameter: a JSON object of lists (or of {value: true} maps,
    /// the older spelling).
    func filters() throws -> [String: [String]] {
        guard let text = string("filters"), !text.isEmpty else { return [:] }
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw DockerError.badRequest("invalid filter: filters=\(text) is not a JSON object")
        }
        var filters: [String: [String]] = [:]
        for (key, value) in object {
            if let list = value as? [String] {
                filters[key] = list
            } else if let map = value as? [String: Bool] {
                filters[key] = map.filter(\.value).map(\.key).sorted()
            } else {
                throw DockerError.badRequest("invalid filter '\(key)': its values must be a list of strings")
            }
        }
        return filters
    }
}

/// An answer: a status, headers and a whole body or a stream of pieces.
struct DockerResponse: Sendable {
    enum Body: Sendable {
        case empty
        case full(Data)
        /// Pieces sent as they come (chunked); the stream's end ends the response.
        case stream(AsyncThrowingStream<Data, Error>)
    }

    var status: HTTPResponseStatus
    var headers: [(String, String)]
    var body: Body

    init(status: HTTPResponseStatus = .ok, headers: [(String, String)] = [], body: Body = .empty) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    static let noContent = DockerResponse(status: .noContent)

    /// `value` as JSON (Docker's field names are the Codable keys).
    static func json<T: Encodable>(_ value: T, status: HTTPResponseStatus = .ok) throws -> DockerResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        var data = try encoder.encode(value)
        data.append(0x0A)
        return DockerResponse(status: status, headers: [("Content-Type", "application/json")], body: .full(data))
    }
}

/// An error as Docker's daemon answers it: a status and `{"message": "..."}`, which the CLI
/// prints as "Error response from daemon: MESSAGE".
struct DockerError: Error, CustomStringConvertible {
    let status: HTTPResponseStatus
    let message: String

    var description: String { message }

    static func badRequest(_ message: String) -> DockerError { DockerError(status: .badRequest, message: message) }
    static func notFound(_ message: String) -> DockerError { DockerError(status: .notFound, message: message) }
    static func conflict(_ message: String) -> DockerError { DockerError(status: .conflict, message: message) }
    static func notImplemented(_ message: String) -> DockerError { DockerError(status: .notImplemented, message: message) }
    static func noSuchContainer(_ reference: String) -> DockerError { .notFound("No such container: \(reference)") }

    var response: DockerResponse {
        let data = (try? JSONSerialization.data(withJSONObject: ["message": message])) ?? Data("{\"message\":\"error\"}".utf8)
        return DockerResponse(status: status, headers: [("Content-Type", "application/json")], body: .full(data + Data([0x0A])))
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String { context.codingPath.map(\.stringValue).joined(separator: ".") }
        switch error {
        case .keyNotFound(let key, let context): return "field \((path(context).isEmpty ? "" : path(context) + ".") + key.stringValue) is required"
        case .typeMismatch(let type, let context): return "field \(path(context)) is not of type \(type)"
        case .valueNotFound(let type, let context): return "field \(path(context)) must be \(type), not null"
        case .dataCorrupted(let context): return path(context).isEmpty ? "not valid JSON" : "field \(path(context)) is malformed"
        @unknown default: return "does not match the schema"
        }
    }
}
