/// An image reference: registry host (with port), repository, and a tag or a digest, e.g.
/// "127.0.0.1:5000/busybox:latest" or "127.0.0.1:5000/tools/busybox@sha256:...". A reference
/// without a registry host means Docker Hub ("busybox" is "docker.io/library/busybox:latest").
public struct ImageReference: Sendable, Equatable, CustomStringConvertible {
    public var registry: String
    public var repository: String
    public var tag: String?
    public var digest: Digest?

    /// A tag or digest to ask the registry for.
    public var manifestReference: String { digest?.description ?? tag ?? "latest" }

    /// Plain HTTP only for loopback registries; anything else speaks HTTPS.
    public var scheme: String {
        let host = registry.split(separator: ":").first.map(String.init) ?? registry
        return ["127.0.0.1", "localhost", "[::1]"].contains(host) || registry.hasPrefix("[::1]") ? "http" : "https"
    }

    /// The registry's API endpoint host ("docker.io" is served by registry-1.docker.io).
    public var endpointHost: String { registry == "docker.io" ? "registry-1.docker.io" : registry }

    public var description: String {
        registry + "/" + repository + (tag.map { ":" + $0 } ?? "") + (digest.map { "@" + $0.description } ?? "")
    }

    public init(parsing text: String) throws(ImageError) {
        guard !text.isEmpty, text.utf8.count <= 1024 else { throw .badReference(String(text.prefix(100)), "must be 1-1024 characters") }
        guard text.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0.value < 0x7F }) else {
            throw .badReference(String(text.prefix(100)), "holds a space, a control or a non-ASCII character")
        }
        var rest = Substring(text)
        var digest: Digest?
        if let at = rest.firstIndex(of: "@") {
            do { digest = try Digest(parsing: String(rest[rest.index(after: at)...])) } catch {
                throw .badReference(text, "\(error)")
            }
            rest = rest[..<at]
        }
        var registry = "docker.io"
        if let slash = rest.firstIndex(of: "/") {
            let first = rest[..<slash]
            if first.contains(".") || first.contains(":") || first == "localhost" {
                registry = String(first)
                rest = rest[rest.index(after: slash)...]
            }
        }
        var tag: String?
        if let colon = rest.lastIndex(of: ":") {
            tag = String(rest[rest.index(after: colon)...])
            rest = rest[..<colon]
        }
        var repository = String(rest)
        if registry == "docker.io" && !repository.contains("/") { repository = "library/" + repository }
        if let tag {
            guard Self.validTag(tag) else { throw .badReference(text, "tag \"\(tag)\" must be 1-128 letters, digits, '_', '.' or '-', starting with a letter, digit or '_'") }
        }
        guard Self.validRepository(repository) else {
            throw .badReference(text, "repository \"\(repository)\" must be lowercase path components of letters, digits and '.', '_', '-' separators")
        }
        guard Self.validRegistry(registry) else { throw .badReference(text, "registry \"\(registry)\" is not a host name with an optional port") }
        self.registry = registry
        self.repository = repository
        self.tag = tag ?? (digest == nil ? "latest" : nil)
        self.digest = digest
    }

    static func validTag(_ tag: String) -> Bool {
        guard let first = tag.utf8.first, tag.utf8.count <= 128, first != UInt8(ascii: "."), first != UInt8(ascii: "-") else { return false }
        return tag.utf8.allSatisfy { isAlphanumeric($0) || "_.-".utf8.contains($0) }
    }

    static func validRepository(_ repository: String) -> Bool {
        guard repository.utf8.count <= 255 else { return false }
        let components = repository.split(separator: "/", omittingEmptySubsequences: false)
        return components.allSatisfy { component in
            guard let first = component.utf8.first, let last = component.utf8.last, isLowerAlphanumeric(first), isLowerAlphanumeric(last) else { return false }
            return component.utf8.allSatisfy { isLowerAlphanumeric($0) || "._-".utf8.contains($0) }
        }
    }

    static func validRegistry(_ registry: String) -> Bool {
        guard !registry.isEmpty, registry.utf8.count <= 255 else { return false }
        return registry.utf8.allSatisfy { isAlphanumeric($0) || ".-:[]".utf8.contains($0) }
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
    }

    private static func isLowerAlphanumeric(_ byte: UInt8) -> Bool { (0x30...0x39).contains(byte) || (0x61...0x7A).contains(byte) }
}
