import Foundation

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
    public static func write<Sink: QuickJSONSink>(_ text: String, into sink: inout Sink) {
        sink.appendByte(UInt8(ascii: "\""))
        let utf8 = text.utf8
        var pending = utf8.startIndex
        var position = utf8.startIndex
        while position != utf8.endIndex {
            let byte = utf8[position]
            if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") || byte < 0x20 {
                sink.appendUTF8(utf8[pending..<position])
                switch byte {
                case UInt8(ascii: "\""): sink.appendStatic("\\\"")
                case UInt8(ascii: "\\"): sink.appendStatic("\\\\")
                case 0x0A: sink.appendStatic("\\n")
                case 0x0D: sink.appendStatic("\\r")
                case 0x09: sink.appendStatic("\\t")
                case 0x08: sink.appendStatic("\\b")
                case 0x0C: sink.appendStatic("\\f")
                default:
                    sink.appendStatic("\\u00")
                    sink.appendByte(hexDigit(byte >> 4))
                    sink.appendByte(hexDigit(byte & 0x0F))
                }
                pending = utf8.index(after: position)
            }
            position = utf8.index(after: position)
        }
        sink.appendUTF8(utf8[pending..<utf8.endIndex])
        sink.appendByte(UInt8(ascii: "\""))
    }

    private static func hexDigit(_ value: UInt8) -> UInt8 { value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10 }

    /// JSON written by hand into an array of bytes: an object's members one after another, in
    /// the order the caller gives (readers here and JSONDecoder take any order).
    public struct Writer: QuickJSONSink {
        public private(set) var bytes: [UInt8] = []
        /// Whether the object being written has no member yet.
        private var first = true

        public init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

        public mutating func appendByte(_ byte: UInt8) { bytes.append(byte) }
        public mutating func appendUTF8(_ text: Substring.UTF8View) { bytes.append(contentsOf: text) }
        public mutating func appendBytes(_ more: ArraySlice<UInt8>) { bytes.append(contentsOf: more) }
        public mutating func appendStatic(_ text: StaticString) {
            // unsafe: a StaticString's bytes are immutable and live for the program.
            bytes.append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
        }

        public mutating func beginObject() {
            appendByte(UInt8(ascii: "{"))
            first = true
        }

        public mutating func endObject() {
            appendByte(UInt8(ascii: "}"))
            first = false
        }

        /// `"name":` with the comma before it when a member came before.
        public mutating func key(_ name: StaticString) {
            if !first { appendByte(UInt8(ascii: ",")) }
            first = false
            appendByte(UInt8(ascii: "\""))
            appendStatic(name)
            appendStatic("\":")
        }

        public mutating func string(_ text: String) { QuickJSON.write(text, into: &self) }
        public mutating func integer<Number: BinaryInteger>(_ value: Number) { appendUTF8(String(value).utf8[...]) }
        public mutating func boolean(_ flag: Bool) { appendStatic(flag ? "true" : "false") }
        /// A finite number as Swift prints it (which JSONDecoder reads back exactly); null when
        /// it is not finite.
        public mutating func double(_ value: Double) {
            guard value.isFinite else { return appendStatic("null") }
            appendUTF8("\(value)".utf8[...])
        }

        public mutating func strings(_ items: [String]) {
            appendByte(UInt8(ascii: "["))
            for (index, item) in items.enumerated() {
                if index > 0 { appendByte(UInt8(ascii: ",")) }
                string(item)
            }
            appendByte(UInt8(ascii: "]"))
        }

        /// An object of strings, its keys sorted (as the API's encoder writes them).
        public mutating func stringMap(_ map: [String: String]) {
            appendByte(UInt8(ascii: "{"))
            for (index, entry) in map.sorted(by: { $0.key < $1.key }).enumerated() {
                if index > 0 { appendByte(UInt8(ascii: ",")) }
                string(entry.key)
                appendByte(UInt8(ascii: ":"))
                string(entry.value)
            }
            appendByte(UInt8(ascii: "}"))
        }

        /// Bytes that are one JSON value already.
        public mutating func raw(_ json: [UInt8]) { bytes.append(contentsOf: json) }
    }
}

/// Where `QuickJSON.write` puts its bytes (its `Writer`; NIO's ByteBuffer in the API).
public protocol QuickJSONSink {
    mutating func appendByte(_ byte: UInt8)
    mutating func appendUTF8(_ text: Substring.UTF8View)
    mutating func appendStatic(_ text: StaticString)
}
