import Engine
import Foundation
import NIOCore

/// The launch path's JSON without Foundation's coders: request and answer bodies of container
/// creates and runs, read into a small tree and written by hand. In a release daemon JSONDecoder
/// took ~25 µs of a `POST /v1/containers/run` and JSONEncoder ~15 µs (perf, 1,000 runs), and in
/// a VCH the decodes around a create ~0.3 ms each with cold caches.
///
/// The readers built on it are fast paths, not a second definition of the API: each accepts only
/// a body it reads whole and exactly as JSONDecoder would, and gives up (nil) on anything else
/// (a key given twice, a null where a value must be, a number that is not a plain integer where
/// one is wanted, an unknown field), which then goes through the decoder and its errors.
public enum QuickJSON {
    /// A JSON value. Numbers keep their text (checked against JSON's grammar).
    public enum Node: Equatable, Sendable {
        case null
        case boolean(Bool)
        case number(String)
        case string(String)
        case array([Node])
        case object([Member])

        /// -?(0|[1-9][0-9]*), within Int; nil for any other node.
        public var integer: Int? {
            guard case .number(let text) = self else { return nil }
            var digits = Substring(text)
            let negative = digits.first == "-"
            if negative { digits = digits.dropFirst() }
            guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                  digits.count == 1 || digits.first != "0", !(negative && digits == "0") else { return nil }
            return Int(text)
        }

        /// A finite number; nil for any other node.
        public var double: Double? {
            guard case .number(let text) = self, let value = Double(text), value.isFinite else { return nil }
            return value
        }

        public var string: String? {
            if case .string(let text) = self { return text }
            return nil
        }

        public var boolean: Bool? {
            if case .boolean(let flag) = self { return flag }
            return nil
        }

        /// An array whose items are all strings.
        public var strings: [String]? {
            guard case .array(let items) = self else { return nil }
            var texts: [String] = []
            texts.reserveCapacity(items.count)
            for item in items {
                guard case .string(let text) = item else { return nil }
                texts.append(text)
            }
            return texts
        }

        /// An object whose values are all strings.
        public var stringMap: [String: String]? {
            guard case .object(let members) = self else { return nil }
            var map: [String: String] = [:]
            for member in members {
                guard case .string(let text) = member.value else { return nil }
                map[member.key] = text
            }
            return map
        }

        public var members: [Member]? {
            if case .object(let members) = self { return members }
            return nil
        }
    }

    public struct Member: Equatable, Sendable {
        public var key: String
        public var value: Node
    }

    /// The JSON text in `bytes` as a tree; nil when it is not one JSON value (with only white
    /// space around it), an object has a key twice, or it nests deeper than 64.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> Node? {
        var reader = Reader(bytes: bytes)
        guard let node = reader.value(depth: 0), reader.atEnd else { return nil }
        return node
    }

    public static func parse(_ data: Data) -> Node? {
        // unsafe: the reader reads only within the data's bytes, during this closure.
        data.withUnsafeBytes { parse($0) }
    }

    public static func parse(_ buffer: ByteBuffer) -> Node? {
        // unsafe: the reader reads only within the buffer's readable bytes, during this closure.
        buffer.withUnsafeReadableBytes { parse($0) }
    }

    private struct Reader {
        let bytes: UnsafeRawBufferPointer
        var index = 0

        var atEnd: Bool {
            mutating get {
                skipSpace()
                return index == bytes.count
            }
        }

        mutating func skipSpace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x09, 0x0A, 0x0D: index += 1
                default: return
                }
            }
        }

        mutating func take(_ byte: UInt8) -> Bool {
            skipSpace()
            guard index < bytes.count, bytes[index] == byte else { return false }
            index += 1
            return true
        }

        mutating func peek() -> UInt8? {
            skipSpace()
            return index < bytes.count ? bytes[index] : nil
        }

        mutating func value(depth: Int) -> Node? {
            guard depth < 64 else { return nil }
            switch peek() {
            case UInt8(ascii: "\""): return string().map(Node.string)
            case UInt8(ascii: "t"): return literal("true") ? .boolean(true) : nil
            case UInt8(ascii: "f"): return literal("false") ? .boolean(false) : nil
            case UInt8(ascii: "n"): return literal("null") ? .null : nil
            case UInt8(ascii: "["):
                index += 1
                var items: [Node] = []
                if take(UInt8(ascii: "]")) { return .array(items) }
                while true {
                    guard let item = value(depth: depth + 1) else { return nil }
                    items.append(item)
                    if take(UInt8(ascii: ",")) { continue }
                    return take(UInt8(ascii: "]")) ? .array(items) : nil
                }
            case UInt8(ascii: "{"):
                index += 1
                var members: [Member] = []
                if take(UInt8(ascii: "}")) { return .object(members) }
                while true {
                    guard peek() == UInt8(ascii: "\""), let key = string(), take(UInt8(ascii: ":")), let item = value(depth: depth + 1) else { return nil }
                    if members.contains(where: { $0.key == key }) { return nil }
                    members.append(Member(key: key, value: item))
                    if take(UInt8(ascii: ",")) { continue }
                    return take(UInt8(ascii: "}")) ? .object(members) : nil
                }
            case let byte? where byte == UInt8(ascii: "-") || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")):
                return number().map(Node.number)
            default:
                return nil
            }
        }

        mutating func literal(_ word: StaticString) -> Bool {
            let count = word.utf8CodeUnitCount
            guard bytes.count - index >= count else { return false }
            for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] { return false }
            index += count
            return true
        }

        func isDigit(_ at: Int) -> Bool { at < bytes.count && bytes[at] >= UInt8(ascii: "0") && bytes[at] <= UInt8(ascii: "9") }

        /// -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, as its text.
        mutating func number() -> String? {
            let start = index
            if bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard isDigit(index) else { return nil }
            if bytes[index] == UInt8(ascii: "0") {
                index += 1
            } else {
                while isDigit(index) { index += 1 }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
                index += 1
                guard isDigit(index) else { return nil }
                while isDigit(index) { index += 1 }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
                index += 1
                if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
                guard isDigit(index) else { return nil }
                while isDigit(index) { index += 1 }
            }
            return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        }

        /// A string at `index` (its opening quote), escapes decoded; nil for a raw control
        /// character, a bad escape, a lone surrogate or bytes that are not UTF-8.
        mutating func string() -> String? {
            index += 1
            let start = index
            // The common case: no escape, so the string is the bytes between the quotes.
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") {
                    let text = String(validating: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
                    index += 1
                    return text
                }
                if byte == UInt8(ascii: "\\") { break }
                if byte < 0x20 { return nil }
                index += 1
            }
            var scalars: [UInt8] = Array(bytes[start..<index])
            while index < bytes.count {
                let byte = bytes[index]
                index += 1
                switch byte {
                case UInt8(ascii: "\""):
                    return String(validating: scalars, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    guard index < bytes.count else { return nil }
                    let escape = bytes[index]
                    index += 1
                    switch escape {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scalars.append(escape)
                    case UInt8(ascii: "b"): scalars.append(0x08)
                    case UInt8(ascii: "f"): scalars.append(0x0C)
                    case UInt8(ascii: "n"): scalars.append(0x0A)
                    case UInt8(ascii: "r"): scalars.append(0x0D)
                    case UInt8(ascii: "t"): scalars.append(0x09)
                    case UInt8(ascii: "u"):
                        guard var code = hex4() else { return nil }
                        if (0xD800..<0xDC00).contains(code) {
                            guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else { return nil }
                            index += 2
                            guard let low = hex4(), (0xDC00..<0xE000).contains(low) else { return nil }
                            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        } else if (0xDC00..<0xE000).contains(code) {
                            return nil
                        }
                        guard let scalar = Unicode.Scalar(code) else { return nil }
                        scalars.append(contentsOf: String(Character(scalar)).utf8)
                    default:
                        return nil
                    }
                default:
                    if byte < 0x20 { return nil }
                    scalars.append(byte)
                }
            }
            return nil
        }

        mutating func hex4() -> UInt32? {
            guard bytes.count - index >= 4 else { return nil }
            var code: UInt32 = 0
            for _ in 0..<4 {
                let byte = bytes[index]
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default: return nil
                }
                code = code << 4 | UInt32(digit)
                index += 1
            }
            return code
        }
    }

    // MARK: Writing

    /// `text` as a JSON string (quotes, escapes; "/" unescaped, as the API's encoder writes it).
    public static func write(_ text: String, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "\""))
        var pending = text.utf8.startIndex
        let utf8 = text.utf8
        var position = utf8.startIndex
        while position != utf8.endIndex {
            let byte = utf8[position]
            if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") || byte < 0x20 {
                buffer.writeSubstring(Substring(utf8[pending..<position]))
                switch byte {
                case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
                case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
                case 0x0A: buffer.writeStaticString("\\n")
                case 0x0D: buffer.writeStaticString("\\r")
                case 0x09: buffer.writeStaticString("\\t")
                case 0x08: buffer.writeStaticString("\\b")
                case 0x0C: buffer.writeStaticString("\\f")
                default:
                    let hex: [UInt8] = Array("0123456789abcdef".utf8)
                    buffer.writeStaticString("\\u00")
                    buffer.writeInteger(hex[Int(byte >> 4)])
                    buffer.writeInteger(hex[Int(byte & 0x0F)])
                }
                pending = utf8.index(after: position)
            }
            position = utf8.index(after: position)
        }
        buffer.writeSubstring(Substring(utf8[pending..<utf8.endIndex]))
        buffer.writeInteger(UInt8(ascii: "\""))
    }
}

extension ContainerSpec {
    /// The spec in a request body, by `QuickJSON`; nil when the body needs the full decoder
    /// (which `decodeStrict` runs: no unknown field, no null, each of its type).
    static func quick(from body: ByteBuffer) -> ContainerSpec? {
        guard let members = QuickJSON.parse(body)?.members else { return nil }
        var spec = ContainerSpec(image: "")
        var hasImage = false
        for member in members {
            let value = member.value
            switch member.key {
            case "image": guard let text = value.string else { return nil }; spec.image = text; hasImage = true
            case "name": guard let text = value.string else { return nil }; spec.name = text
            case "hostname": guard let text = value.string else { return nil }; spec.hostname = text
            case "stdin": guard let text = value.string else { return nil }; spec.stdin = text
            case "pool": guard let text = value.string else { return nil }; spec.pool = text
            case "forkPoint": guard let point = value.string.flatMap(ForkPointName.init(rawValue:)) else { return nil }; spec.forkPoint = point
            case "arguments": guard let items = value.strings else { return nil }; spec.arguments = items
            case "entrypoint": guard let items = value.strings else { return nil }; spec.entrypoint = items
            case "cmd": guard let items = value.strings else { return nil }; spec.cmd = items
            case "environment": guard let items = value.strings else { return nil }; spec.environment = items
            case "memoryMiB": guard let number = value.integer else { return nil }; spec.memoryMiB = number
            case "memoryReservationMiB": guard let number = value.integer else { return nil }; spec.memoryReservationMiB = number
            case "labels": guard let map = value.stringMap else { return nil }; spec.labels = map
            case "openStdin": guard let flag = value.boolean else { return nil }; spec.openStdin = flag
            case "tty": guard let flag = value.boolean else { return nil }; spec.tty = flag
            default: return nil
            }
        }
        return hasImage ? spec : nil
    }

    /// The spec as the API's request body (the fields that are set).
    public func quickJSON() -> Data {
        var buffer = ByteBuffer()
        var first = true
        func key(_ name: StaticString) {
            buffer.writeStaticString(first ? "{\"" : ",\"")
            first = false
            buffer.writeStaticString(name)
            buffer.writeStaticString("\":")
        }
        func strings(_ items: [String]) {
            buffer.writeStaticString("[")
            for (index, item) in items.enumerated() {
                if index > 0 { buffer.writeStaticString(",") }
                QuickJSON.write(item, into: &buffer)
            }
            buffer.writeStaticString("]")
        }
        key("image"); QuickJSON.write(image, into: &buffer)
        if let name { key("name"); QuickJSON.write(name, into: &buffer) }
        if let arguments { key("arguments"); strings(arguments) }
        if let entrypoint { key("entrypoint"); strings(entrypoint) }
        if let cmd { key("cmd"); strings(cmd) }
        if let environment { key("environment"); strings(environment) }
        if let hostname { key("hostname"); QuickJSON.write(hostname, into: &buffer) }
        if let memoryMiB { key("memoryMiB"); buffer.writeString(String(memoryMiB)) }
        if let forkPoint { key("forkPoint"); QuickJSON.write(forkPoint.rawValue, into: &buffer) }
        if let labels {
            key("labels")
            buffer.writeStaticString("{")
            for (index, label) in labels.sorted(by: { $0.key < $1.key }).enumerated() {
                if index > 0 { buffer.writeStaticString(",") }
                QuickJSON.write(label.key, into: &buffer)
                buffer.writeStaticString(":")
                QuickJSON.write(label.value, into: &buffer)
            }
            buffer.writeStaticString("}")
        }
        if let openStdin { key("openStdin"); buffer.writeStaticString(openStdin ? "true" : "false") }
        if let stdin { key("stdin"); QuickJSON.write(stdin, into: &buffer) }
        if let tty { key("tty"); buffer.writeStaticString(tty ? "true" : "false") }
        if let pool { key("pool"); QuickJSON.write(pool, into: &buffer) }
        if let memoryReservationMiB { key("memoryReservationMiB"); buffer.writeString(String(memoryReservationMiB)) }
        buffer.writeStaticString("}")
        return Data(buffer.readableBytesView)
    }
}

extension ContainerInfo {
    /// The fields `quick` reads; an answer with any other goes to JSONDecoder.
    private static let quickFields: Set<String> = [
        "id", "name", "image", "state", "exitCode", "exitReason", "arguments", "environment", "hostname", "memoryMiB", "forkPoint", "labels",
        "parent", "pool", "placementID", "createdAt", "startedAt", "finishedAt", "forkMicroseconds", "reusedVM", "argv0", "entrypoint", "cmd", "tty",
    ]

    /// A container as the agent answers it, by `QuickJSON`; nil when the answer needs
    /// JSONDecoder (a field this reader does not know, such as the memory figures).
    public static func quick(from body: Data) -> ContainerInfo? {
        guard let members = QuickJSON.parse(body)?.members else { return nil }
        var fields: [String: QuickJSON.Node] = [:]
        for member in members where member.value != .null { fields[member.key] = member.value }
        guard fields.keys.allSatisfy(quickFields.contains),
              let id = fields["id"]?.string, let name = fields["name"]?.string, let image = fields["image"]?.string,
              let state = fields["state"]?.string.flatMap(ContainerState.init(rawValue:)), let arguments = fields["arguments"]?.strings,
              let environment = fields["environment"]?.strings, let hostname = fields["hostname"]?.string,
              let memoryMiB = fields["memoryMiB"]?.integer, let forkPoint = fields["forkPoint"]?.string.flatMap(ForkPointName.init(rawValue:)),
              let labels = fields["labels"]?.stringMap, let parent = fields["parent"]?.string, let createdAt = fields["createdAt"]?.double
        else { return nil }
        // An optional field present must be of its type.
        func optional<T>(_ key: String, _ read: (QuickJSON.Node) -> T?) -> T?? {
            guard let node = fields[key] else { return .some(nil) }
            guard let value = read(node) else { return nil }
            return .some(value)
        }
        guard let exitCode = optional("exitCode", \.integer), let exitReason = optional("exitReason", \.string),
              let pool = optional("pool", \.string), let placementID = optional("placementID", \.integer),
              let startedAt = optional("startedAt", \.double), let finishedAt = optional("finishedAt", \.double),
              let forkMicroseconds = optional("forkMicroseconds", \.double), let reusedVM = optional("reusedVM", \.boolean),
              let argv0 = optional("argv0", \.string), let entrypoint = optional("entrypoint", \.strings), let cmd = optional("cmd", \.strings),
              let tty = optional("tty", \.boolean)
        else { return nil }
        let info = ContainerInfo(id: id, name: name, image: image, state: state, exitCode: exitCode, exitReason: exitReason, arguments: arguments,
                                 environment: environment, hostname: hostname, memoryMiB: memoryMiB, forkPoint: forkPoint, labels: labels,
                                 parent: parent, pool: pool, placementID: placementID, createdAt: createdAt, startedAt: startedAt,
                                 finishedAt: finishedAt, forkMicroseconds: forkMicroseconds, reusedVM: reusedVM, memory: nil,
                                 argv0: argv0, entrypoint: entrypoint, cmd: cmd, tty: tty)
        return info
    }
}

extension ExitInfo {
    /// How a container ended, as the agent's wait answers (output in base64, as JSONEncoder's
    /// default writes Data); nil when the answer needs JSONDecoder.
    public static func quick(from body: Data) -> ExitInfo? {
        guard let members = QuickJSON.parse(body)?.members else { return nil }
        var exit = ExitInfo(exitCode: 0, reason: "")
        var (hasCode, hasReason) = (false, false)
        for member in members where member.value != .null {
            let value = member.value
            switch member.key {
            case "exitCode": guard let code = value.integer else { return nil }; exit.exitCode = code; hasCode = true
            case "reason": guard let text = value.string else { return nil }; exit.reason = text; hasReason = true
            case "stdout": guard let data = value.string.flatMap({ Data(base64Encoded: $0) }) else { return nil }; exit.stdout = data
            case "stderr": guard let data = value.string.flatMap({ Data(base64Encoded: $0) }) else { return nil }; exit.stderr = data
            case "removed": guard let flag = value.boolean else { return nil }; exit.removed = flag
            default: return nil
            }
        }
        return hasCode && hasReason ? exit : nil
    }

    /// The wait's answer as the API writes it (sorted keys; output in base64).
    func quickJSON() -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeStaticString("{\"exitCode\":")
        buffer.writeString(String(exitCode))
        buffer.writeStaticString(",\"reason\":")
        QuickJSON.write(reason, into: &buffer)
        if let removed { buffer.writeStaticString(removed ? ",\"removed\":true" : ",\"removed\":false") }
        if let stderr {
            buffer.writeStaticString(",\"stderr\":")
            QuickJSON.write(stderr.base64EncodedString(), into: &buffer)
        }
        if let stdout {
            buffer.writeStaticString(",\"stdout\":")
            QuickJSON.write(stdout.base64EncodedString(), into: &buffer)
        }
        buffer.writeStaticString("}")
        return buffer
    }
}

extension RunResult {
    /// The JSON the API answers a run with (the same fields and values as the Codable form,
    /// sorted by name); nil when a figure is not finite (the Codable form refuses it).
    func quickJSON() -> ByteBuffer? {
        for figure in [forkMicroseconds, startedAt, finishedAt] {
            if let figure, !figure.isFinite { return nil }
        }
        var buffer = ByteBuffer()
        buffer.reserveCapacity(160 + stdout.utf8.count + stderr.utf8.count + reason.utf8.count)
        buffer.writeStaticString("{\"exitCode\":")
        buffer.writeString(String(exitCode))
        if let finishedAt {
            buffer.writeStaticString(",\"finishedAt\":")
            buffer.writeString("\(finishedAt)")
        }
        if let forkMicroseconds {
            buffer.writeStaticString(",\"forkMicroseconds\":")
            buffer.writeString("\(forkMicroseconds)")
        }
        buffer.writeStaticString(",\"id\":")
        QuickJSON.write(id, into: &buffer)
        buffer.writeStaticString(",\"reason\":")
        QuickJSON.write(reason, into: &buffer)
        if let startedAt {
            buffer.writeStaticString(",\"startedAt\":")
            buffer.writeString("\(startedAt)")
        }
        buffer.writeStaticString(",\"stderr\":")
        QuickJSON.write(stderr, into: &buffer)
        buffer.writeStaticString(",\"stdout\":")
        QuickJSON.write(stdout, into: &buffer)
        buffer.writeStaticString("}")
        return buffer
    }
}
