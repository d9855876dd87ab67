import Foundation

/// A content digest, "sha256:" and 64 lowercase hex digits: the only algorithm accepted, so
/// every blob can be verified.
public struct Digest: Hashable, Sendable, Codable, CustomStringConvertible, Comparable {
    /// The 64 hex digits.
    public let hex: String

    public init(hex: String) throws(ImageError) {
        guard hex.utf8.count == 64, hex.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else {
            throw .malformed(what: "digest sha256:\(hex.prefix(80))", problem: "not 64 lowercase hex digits")
        }
        self.hex = hex
    }

    public init(parsing text: String) throws(ImageError) {
        guard text.hasPrefix("sha256:") else {
            throw .unsupported("digest \"\(text.prefix(100))\": only sha256 digests are accepted")
        }
        try self.init(hex: String(text.dropFirst(7)))
    }

    public var description: String { "sha256:" + hex }
    /// A short form for messages and names (12 hex digits).
    public var short: String { String(hex.prefix(12)) }

    public static func < (lhs: Digest, rhs: Digest) -> Bool { lhs.hex < rhs.hex }

    public static func of<C: ContiguousBytes>(_ bytes: C) -> Digest {
        // The hasher always yields 64 lowercase hex digits.
        Digest(unchecked: SHA256.hex(of: bytes))
    }

    init(unchecked hex: String) { self.hex = hex }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { try self.init(parsing: text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.description))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
