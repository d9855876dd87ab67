/// Why a pull, an unpack or a collection failed. Each case names what was wrong: the
/// reference, the registry's answer, the blob or the tar entry.
public enum ImageError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The reference the caller gave does not parse.
    case badReference(String, String)
    /// The registry could not be reached, or answered with an HTTP error.
    case registry(String)
    /// The registry wants credentials the caller did not give, or refused the ones given.
    case unauthorized(String)
    /// A manifest, index or config that is not valid, or lies (sizes, digests, counts).
    case malformed(what: String, problem: String)
    /// Bytes whose sha256 is not the digest they were asked for by.
    case digestMismatch(what: String, expected: String, actual: String)
    /// A layer tarball that is not valid, or that asks for something refused (a path out of
    /// the root, a device node, a write through a link, over a limit).
    case unsafeLayer(layer: String, entry: String, problem: String)
    /// Something the puller does not support (zstd layers, a platform missing from an index).
    case unsupported(String)
    /// Refused for now: a collection while a pull is in flight.
    case busy(String)
    /// The host failed: a file could not be written, the datastore is not usable.
    case io(String)

    public var description: String {
        switch self {
        case .badReference(let text, let problem): "image reference \"\(text)\": \(problem)"
        case .registry(let message): message
        case .unauthorized(let message): message
        case .malformed(let what, let problem): "\(what): \(problem)"
        case .digestMismatch(let what, let expected, let actual): "\(what): digest mismatch, expected \(expected) but the content hashes to \(actual)"
        case .unsafeLayer(let layer, let entry, let problem): "layer \(layer), entry \"\(Self.shortened(entry))\": \(problem)"
        case .unsupported(let message): message
        case .busy(let message): message
        case .io(let message): message
        }
    }

    /// An entry's name as an error shows it: a hostile layer's name may be a megabyte long
    /// (a pax path or a GNU long name), and the message goes to logs and API answers.
    static func shortened(_ entry: String) -> String {
        let limit = 200
        guard entry.utf8.count > limit else { return entry }
        return String(decoding: entry.utf8.prefix(limit), as: UTF8.self) + "… (\(entry.utf8.count) bytes)"
    }
}
