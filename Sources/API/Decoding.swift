import Engine
import Foundation
import Hummingbird

/// A JSON request body with the fields it may hold; any other field is refused.
protocol StrictBody: Decodable {
    static var fields: Set<String> { get }
    /// The body read without JSONDecoder (`QuickJSON`), where a type has such a fast path; nil
    /// sends it through the decoder.
    static func quick(from body: ByteBuffer) -> Self?
}

extension StrictBody {
    static func quick(from body: ByteBuffer) -> Self? { nil }
}

/// A StrictBody decoded after its keys are checked: a JSON object, no unknown field, no null.
private struct StrictlyDecoded<T: StrictBody>: Decodable {
    let value: T

    init(from decoder: any Decoder) throws {
        let object: KeyedDecodingContainer<AnyKey>
        do { object = try decoder.container(keyedBy: AnyKey.self) } catch DecodingError.typeMismatch {
            throw APIError.invalid("the body must be a JSON object")
        }
        let keys = object.allKeys.map(\.stringValue).sorted()
        if let unknown = keys.first(where: { !T.fields.contains($0) }) {
            throw APIError.invalid("unknown field \"\(unknown)\" (allowed: \(T.fields.sorted().joined(separator: ", ")))", field: unknown)
        }
        if let null = keys.first(where: { (try? object.decodeNil(forKey: AnyKey(stringValue: $0))) == true }) {
            throw APIError.invalid("field \"\(null)\" is null; leave it out instead", field: null)
        }
        value = try T(from: decoder)
    }
}

/// A JSON object's key, whatever its name.
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

extension Request {
    /// The body as `T`: a JSON object, no unknown or null fields, each of the right type.
    /// Nothing is changed anywhere before this succeeds.
    mutating func decodeStrict<T: StrictBody>(_ type: T.Type) async throws -> T {
        let buffer = try await collectBody(upTo: AgentLimits.maxBodyBytes)
        if let value = T.quick(from: buffer) { return value }
        do {
            // One parse: the object's keys are checked, then T decodes from the same decoder
            // (a JSONSerialization pass before the decoder's took a sixth of a run's HTTP time).
            return try JSONDecoder().decode(StrictlyDecoded<T>.self, from: Data(buffer.readableBytesView)).value
        } catch let error as DecodingError {
            throw APIError(decoding: error)
        }
    }

    /// The query's first value of `name`, as `uri.queryParameters` has it, found by a scan of
    /// the target: that property builds a dictionary of every parameter, percent-decoded, at
    /// each use (~7 µs of a run's request here). A value with an escape, or a target with a
    /// fragment, is left to it.
    func queryValue(_ name: String) -> Substring? {
        let target = uri.string
        guard !target.utf8.contains(UInt8(ascii: "#")) else { return uri.queryParameters[Substring(name)] }
        guard let raw = QueryScan.value(of: name, in: target) else { return nil }
        return raw.utf8.contains(UInt8(ascii: "%")) ? uri.queryParameters[Substring(name)] : raw
    }

    /// The query's value of `name` as a boolean ("true"/"false"; also "1"/"0").
    func bool(_ name: String, default value: Bool) throws -> Bool {
        guard let text = queryValue(name) else { return value }
        switch text {
        case "true", "1": return true
        case "false", "0": return false
        default: throw APIError.invalid("query parameter \(name)=\(text) is not true or false", field: name)
        }
    }

    func int(_ name: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let text = queryValue(name) else { return nil }
        guard let value = Int(text), range.contains(value) else {
            throw APIError.invalid("query parameter \(name)=\(text) is not an integer in \(range)", field: name)
        }
        return value
    }

    func double(_ name: String, in range: ClosedRange<Double>) throws -> Double? {
        guard let text = queryValue(name) else { return nil }
        guard let value = Double(text), value.isFinite, range.contains(value) else {
            throw APIError.invalid("query parameter \(name)=\(text) is not a number in \(range)", field: name)
        }
        return value
    }

    func string(_ name: String, maxLength: Int = 1024) throws -> String? {
        guard let text = queryValue(name) else { return nil }
        guard text.unicodeScalars.count <= maxLength else { throw APIError.invalid("query parameter \(name) is over \(maxLength) bytes", field: name) }
        return String(text)
    }
}

extension APIError {
    init(decoding error: DecodingError) {
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context):
            let field = (path(context).isEmpty ? "" : path(context) + ".") + key.stringValue
            self = .invalid("field \"\(field)\" is required", field: field)
        case .typeMismatch(let type, let context):
            self = .invalid("field \"\(path(context))\" must be \(Self.typeName(type))", field: path(context))
        case .valueNotFound(let type, let context):
            self = .invalid("field \"\(path(context))\" must be \(Self.typeName(type)), not null", field: path(context))
        case .dataCorrupted(let context):
            let field = path(context)
            self = .invalid(field.isEmpty ? "the body is not valid JSON, or holds a number out of any range" : "field \"\(field)\" is out of range or malformed", field: field.isEmpty ? nil : field)
        @unknown default:
            self = .invalid("the body does not match the request's schema")
        }
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type, is Int64.Type, is Int32.Type: "an integer"
        case is Double.Type: "a number"
        case is Bool.Type: "true or false"
        case is String.Type: "a string"
        default: "\(type)".hasPrefix("Array") ? "an array" : "\(type)".hasPrefix("Dictionary") ? "an object" : "a \(type)"
        }
    }
}

// MARK: Request bodies

extension ContainerSpec: StrictBody {
    static let fields: Set<String> = ["image", "name", "arguments", "entrypoint", "cmd", "environment", "hostname", "memoryMiB", "forkPoint", "labels",
                                      "openStdin", "stdin", "pool", "memoryReservationMiB", "tty"]
}

struct ImageRequest: StrictBody {
    static let fields: Set<String> = ["name", "rootfs", "executable", "arguments", "environment"]
    var name: String
    var rootfs: String
    var executable: String
    var arguments: [String]?
    var environment: [String]?
}

struct ParentRequest: StrictBody {
    static let fields: Set<String> = ["image", "forkPoint", "memoryMiB", "parents", "readyVMs"]
    var image: String
    var forkPoint: ForkPointName?
    var memoryMiB: Int?
    var parents: Int?
    var readyVMs: Int?
}

struct PoolRequest: StrictBody {
    static let fields: Set<String> = ["name", "parent", "memoryReservationKiB", "cpuReservationMHz", "memoryLimitKiB", "cpuLimitMHz",
                                      "shares", "expandable", "policy"]
    var name: String
    var parent: String?
    var memoryReservationKiB: Int?
    var cpuReservationMHz: Int?
    var memoryLimitKiB: Int?
    var cpuLimitMHz: Int?
    var shares: Int?
    var expandable: Bool?
    var policy: String?
}

struct HostRequest: StrictBody {
    static let fields: Set<String> = ["name", "cpuCores", "cpuMHzPerCore", "nodeMemoryKiB", "simulated"]
    var name: String
    var cpuCores: Int
    var cpuMHzPerCore: Int?
    var nodeMemoryKiB: [Int]
    var simulated: Bool?
}

struct PlacementImageRequest: StrictBody {
    static let fields: Set<String> = ["name", "parentMemoryKiB", "growthPerChildKiB", "cpuMHzPerChild"]
    var name: String
    var parentMemoryKiB: Int
    var growthPerChildKiB: Int
    var cpuMHzPerChild: Int
}

struct WarmParentSiteRequest: StrictBody {
    static let fields: Set<String> = ["host", "image", "node", "pool"]
    var host: String
    var image: String
    var node: Int
    var pool: String?
}

struct PlaceRequest: StrictBody {
    static let fields: Set<String> = ["pool", "image", "allowColdStart", "commit"]
    var pool: String
    var image: String
    var allowColdStart: Bool?
    var commit: Bool?
}

/// Range checks of the numbers the document bounds (placement arithmetic must never overflow).
enum Bounds {
    static let kib = 0...(1 << 40)
    static let mhz = 0...1_000_000_000

    static func check(_ value: Int?, _ range: ClosedRange<Int>, _ field: String) throws {
        if let value, !range.contains(value) { throw APIError.invalid("\(field) \(value) is out of range (\(range))", field: field) }
    }

    static func name(_ value: String, _ field: String) throws {
        guard !value.isEmpty, value.utf8.count <= 128 else { throw APIError.invalid("\(field) must be 1-128 bytes", field: field) }
    }
}

/// A query parameter's value in a request target, undecoded.
enum QueryScan {
    /// The first value of `name` in the query of `target` (after its first `?`, parameters
    /// split at `&`, a name without `=` having the empty value), nil when it has none.
    static func value(of name: String, in target: String) -> Substring? {
        guard let mark = target.utf8.firstIndex(of: UInt8(ascii: "?")) else { return nil }
        let query = target[target.index(after: mark)...]
        for pair in query.split(separator: "&") {
            if let equals = pair.utf8.firstIndex(of: UInt8(ascii: "=")) {
                if pair[..<equals] == name { return pair[pair.index(after: equals)...] }
            } else if pair == name {
                return pair[pair.endIndex...]
            }
        }
        return nil
    }
}
