import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import Synchronization

/// A user name and password for a registry: sent as HTTP basic auth, or to the registry's
/// token endpoint for a bearer token.
public struct RegistryCredentials: Sendable, Equatable {
    public var username: String
    public var password: String
    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    var basicHeader: String { "Basic " + Data("\(username):\(password)".utf8).base64EncodedString() }
}

/// A client of one repository on one registry (HTTP API v2). Answers 401 with the flow the
/// registry's WWW-Authenticate challenge asks for: basic auth with the credentials, or a
/// bearer token from the challenge's realm (anonymous, or with the credentials).
final class RegistryClient: Sendable {
    let reference: ImageReference
    private let credentials: RegistryCredentials?
    private let transfer: HTTPTransfer
    private let authorization = Mutex<String?>(nil)
    private let logger: Logger

    init(reference: ImageReference, credentials: RegistryCredentials?, logger: Logger) {
        self.reference = reference
        self.credentials = credentials
        self.logger = logger
        transfer = HTTPTransfer()
    }

    deinit { transfer.invalidate() }

    private var base: String { "\(reference.scheme)://\(reference.endpointHost)/v2/\(reference.repository)" }

    /// A manifest or index by tag or digest: its bytes and Content-Type.
    func manifest(_ tagOrDigest: String) async throws -> (bytes: [UInt8], contentType: String?, digestHeader: String?) {
        let accept = (MediaType.manifests + MediaType.indexes).joined(separator: ", ")
        let what = "manifest \(reference.repository):\(tagOrDigest)"
        let (bytes, head) = try await document(base + "/manifests/" + tagOrDigest, accept: accept, what: what, limit: DocumentLimits.maxDocumentBytes)
        return (bytes, head.header("content-type"), head.header("docker-content-digest"))
    }

    /// A small blob (a config) in memory, verified against its digest and size.
    func smallBlob(_ descriptor: Descriptor, what: String) async throws -> [UInt8] {
        let (bytes, _) = try await document(base + "/blobs/" + descriptor.digest.description, accept: "*/*", what: what, limit: Int(descriptor.size))
        guard Int64(bytes.count) == descriptor.size else {
            throw ImageError.malformed(what: what, problem: "the registry sent \(bytes.count) bytes but the manifest declares \(descriptor.size)")
        }
        let actual = Digest.of(bytes)
        guard actual == descriptor.digest else { throw ImageError.digestMismatch(what: what, expected: descriptor.digest.description, actual: actual.description) }
        return bytes
    }

    /// Streams a blob into `file` (created), hashing as it goes; throws if it is longer or
    /// shorter than the descriptor says or hashes to another digest.
    /// `received` is told the size of each piece once it is written (a pull's progress).
    func blob(_ descriptor: Descriptor, into file: URL, what: String, received: (@Sendable (Int) -> Void)? = nil) async throws {
        let fd = open(file.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ImageError.io("cannot create \(file.path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let state = Mutex((hasher: SHA256(), count: Int64(0)))
        let limit = descriptor.size
        _ = try await get(base + "/blobs/" + descriptor.digest.description, accept: "*/*", what: what) { piece in
            let failure = state.withLock { state -> ImageError? in
                state.count += Int64(piece.count)
                if state.count > limit { return .malformed(what: what, problem: "the registry sent more than the \(limit) bytes the manifest declares") }
                state.hasher.update(piece)
                var offset = 0
                while offset < piece.count {
                    // unsafe: write reads within the piece's bounds, from offset on.
                    let written = write(fd, piece.baseAddress! + offset, piece.count - offset)
                    if written < 0 {
                        if errno == EINTR { continue }
                        return .io("writing \(file.path) failed: \(String(cString: strerror(errno)))")
                    }
                    offset += written
                }
                return nil
            }
            if failure == nil { received?(piece.count) }
            return failure
        }
        let (count, hex) = state.withLock { state in (state.count, state.hasher.finishHex()) }
        guard count == limit else { throw ImageError.malformed(what: what, problem: "the registry sent \(count) bytes but the manifest declares \(limit)") }
        guard hex == descriptor.digest.hex else { throw ImageError.digestMismatch(what: what, expected: descriptor.digest.description, actual: "sha256:" + hex) }
        guard fsync(fd) == 0 else { throw ImageError.io("fsync \(file.path) failed: \(String(cString: strerror(errno)))") }
    }

    private func document(_ url: String, accept: String, what: String, limit: Int) async throws -> ([UInt8], HTTPTransfer.Head) {
        let buffer = Mutex<[UInt8]>([])
        let head = try await get(url, accept: accept, what: what) { piece in
            buffer.withLock { bytes -> ImageError? in
                if bytes.count + piece.count > limit { return .malformed(what: what, problem: "the registry sent more than \(limit) bytes") }
                bytes.append(contentsOf: piece)
                return nil
            }
        }
        return (buffer.withLock { $0 }, head)
    }

    /// A GET whose 200 body goes to `sink`; a 401 is answered once with the challenge's flow.
    private func get(_ url: String, accept: String, what: String, sink: @escaping @Sendable (UnsafeRawBufferPointer) -> ImageError?) async throws -> HTTPTransfer.Head {
        var retried = false
        while true {
            guard let target = URL(string: url) else { throw ImageError.badReference(reference.description, "does not make a valid URL") }
            var request = URLRequest(url: target)
            request.setValue(accept, forHTTPHeaderField: "Accept")
            if let header = authorization.withLock({ $0 }) { request.setValue(header, forHTTPHeaderField: "Authorization") }
            let errorBody = Mutex<[UInt8]>([])
            let head = try await transfer.send(request) { head, piece in
                if head.status == 200 { return sink(piece) }
                errorBody.withLock { if $0.count < 4096 { $0.append(contentsOf: piece.prefix(4096 - $0.count)) } }
                return nil
            }
            if head.status == 200 { return head }
            let message = Self.errorMessage(errorBody.withLock { $0 })
            if head.status == 401, !retried, let challenge = head.header("www-authenticate") {
                retried = true
                try await authenticate(challenge)
                continue
            }
            switch head.status {
            case 401, 403:
                throw ImageError.unauthorized("registry \(reference.registry) refused access to \(what) (HTTP \(head.status))\(credentials == nil ? " without credentials" : " with the credentials given")\(message)")
            case 404:
                throw ImageError.registry("registry \(reference.registry) has no \(what) (HTTP 404)\(message)")
            default:
                throw ImageError.registry("registry \(reference.registry) answered HTTP \(head.status) for \(what)\(message)")
            }
        }
    }

    /// Takes the flow a WWW-Authenticate challenge asks for.
    private func authenticate(_ header: String) async throws {
        let challenge = AuthChallenge(parsing: header)
        switch challenge?.scheme.lowercased() {
        case "basic":
            guard let credentials else {
                throw ImageError.unauthorized("registry \(reference.registry) requires a user name and password (basic auth); none were given")
            }
            authorization.withLock { $0 = credentials.basicHeader }
        case "bearer":
            guard let challenge, let realm = challenge.parameters["realm"], var components = URLComponents(string: realm),
                  components.scheme == "https" || components.scheme == "http" else {
                throw ImageError.registry("registry \(reference.registry) sent a bearer challenge without a usable realm: \(header.prefix(200))")
            }
            var items = components.queryItems ?? []
            if let service = challenge.parameters["service"] { items.append(URLQueryItem(name: "service", value: service)) }
            items.append(URLQueryItem(name: "scope", value: challenge.parameters["scope"] ?? "repository:\(reference.repository):pull"))
            components.queryItems = items
            guard let url = components.url else { throw ImageError.registry("registry \(reference.registry): token realm \(realm.prefix(200)) is not a URL") }
            let token = try await fetchToken(url)
            authorization.withLock { $0 = "Bearer " + token }
        default:
            throw ImageError.unauthorized("registry \(reference.registry) asks for an authentication scheme not supported: \(header.prefix(200))")
        }
        logger.debug("registry authentication", metadata: ["registry": "\(reference.registry)", "scheme": "\(challenge?.scheme ?? "?")"])
    }

    private func fetchToken(_ url: URL) async throws -> String {
        var request = URLRequest(url: url)
        if let credentials { request.setValue(credentials.basicHeader, forHTTPHeaderField: "Authorization") }
        let body = Mutex<[UInt8]>([])
        let head = try await transfer.send(request) { _, piece in
            body.withLock { bytes -> ImageError? in
                if bytes.count + piece.count > 1 << 20 { return .registry("token endpoint \(url.host ?? "?") sent more than 1 MiB") }
                bytes.append(contentsOf: piece)
                return nil
            }
        }
        let bytes = body.withLock { $0 }
        guard head.status == 200 else {
            throw ImageError.unauthorized("token endpoint \(url.host ?? "?") refused a token (HTTP \(head.status))\(Self.errorMessage(bytes))")
        }
        struct TokenResponse: Decodable { var token: String?; var access_token: String? }
        let response: TokenResponse = try decodeDocument(bytes, what: "token from \(url.host ?? "?")")
        guard let token = response.token ?? response.access_token, !token.isEmpty, token.utf8.count <= 64 * 1024,
              token.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0.value < 0x7F }) else {
            throw ImageError.unauthorized("token endpoint \(url.host ?? "?") answered without a usable token")
        }
        return token
    }

    private static func errorMessage(_ body: [UInt8]) -> String {
        struct Errors: Decodable { struct Entry: Decodable { var code: String?; var message: String? }; var errors: [Entry]? }
        if let errors = try? JSONDecoder().decode(Errors.self, from: Data(body)).errors, let first = errors.first {
            return ": " + [first.code, first.message].compactMap { $0 }.joined(separator: " ").prefix(300)
        }
        return ""
    }
}

/// A WWW-Authenticate challenge: a scheme and its key="value" parameters.
struct AuthChallenge: Equatable {
    var scheme: String
    var parameters: [String: String]

    init?(parsing header: String) {
        let trimmed = header.trimmingCharacters(in: .whitespaces)
        guard let space = trimmed.firstIndex(of: " ") else {
            guard !trimmed.isEmpty else { return nil }
            scheme = trimmed
            parameters = [:]
            return
        }
        scheme = String(trimmed[..<space])
        parameters = [:]
        var rest = Substring(trimmed[space...])
        while true {
            rest = rest.drop { $0 == " " || $0 == "," }
            guard let equals = rest.firstIndex(of: "=") else { break }
            let key = rest[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            rest = rest[rest.index(after: equals)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                var escaped = false
                while let character = rest.first {
                    rest = rest.dropFirst()
                    if escaped { value.append(character); escaped = false } else if character == "\\" { escaped = true } else if character == "\"" { break } else { value.append(character) }
                }
            } else {
                let end = rest.firstIndex(of: ",") ?? rest.endIndex
                value = rest[..<end].trimmingCharacters(in: .whitespaces)
                rest = rest[end...]
            }
            parameters[key] = value
        }
    }
}
