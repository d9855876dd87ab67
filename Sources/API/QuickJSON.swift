import Engine
import NIOCore

/// The launch path's JSON without Foundation's coders: a container's spec read from a request
/// body, and a run's result written, by hand. In a release daemon JSONDecoder took ~25 µs of a
/// `POST /v1/containers/run` and JSONEncoder ~15 µs (perf, 1,000 runs), against ~1 µs here.
///
/// The reader is a fast path, not a second definition of the API: it accepts only a body it
/// reads whole and exactly as JSONDecoder would (one object; known fields, each once, of its
/// type; strings with their escapes; integers in plain digits), and gives up (nil) on anything
/// else, which then goes through `decodeStrict`, whose errors name what was wrong.
enum QuickJSON {
    /// A value of a flat object's field, as the launch path's bodies have them.
    enum Value: Equatable {
        case string(String)
        case integer(Int)
        case boolean(Bool)
        case strings([String])
        case stringMap([String: String])
    }

    /// The fields of a JSON object whose values are strings, integers, booleans, arrays of
    /// strings or objects of strings; nil for any other input (or a key given twice).
    static func flatObject(_ bytes: UnsafeRawBufferPointer) -> [(key: String, value: Value)]? {
        var reader = Reader(bytes: bytes)
        guard let fields = reader.object(), reader.atEnd else { return nil }
        return fields
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

        mutating func object() -> [(key: String, value: Value)]? {
            guard take(UInt8(ascii: "{")) else { return nil }
            var fields: [(key: String, value: Value)] = []
            if take(UInt8(ascii: "}")) { return fields }
            while true {
                guard peek() == UInt8(ascii: "\""), let key = string(), take(UInt8(ascii: ":")), let value = value() else { return nil }
                if fields.contains(where: { $0.key == key }) { return nil }
                fields.append((key, value))
                if take(UInt8(ascii: ",")) { continue }
                return take(UInt8(ascii: "}")) ? fields : nil
            }
        }

        mutating func value() -> Value? {
            switch peek() {
            case UInt8(ascii: "\""): return string().map(Value.string)
            case UInt8(ascii: "t"): return literal("true") ? .boolean(true) : nil
            case UInt8(ascii: "f"): return literal("false") ? .boolean(false) : nil
            case UInt8(ascii: "["):
                index += 1
                var items: [String] = []
                if take(UInt8(ascii: "]")) { return .strings(items) }
                while true {
                    guard peek() == UInt8(ascii: "\""), let item = string() else { return nil }
                    items.append(item)
                    if take(UInt8(ascii: ",")) { continue }
                    return take(UInt8(ascii: "]")) ? .strings(items) : nil
                }
            case UInt8(ascii: "{"):
                guard let fields = object() else { return nil }
                var map: [String: String] = [:]
                for (key, value) in fields {
                    guard case .string(let text) = value else { return nil }
                    map[key] = text
                }
                return .stringMap(map)
            case let byte? where byte == UInt8(ascii: "-") || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")):
                return integer().map(Value.integer)
            default:
                return nil
            }
        }

        mutating func literal(_ word: StaticString) -> Bool {
            let count = word.utf8CodeUnitCount
            guard bytes.count - index >= count else { return false }
            for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] { return false }
            index += count
            // A literal runs into the next token only with a delimiter between.
            if index < bytes.count, Self.isWordCharacter(bytes[index]) { return false }
            return true
        }

        static func isWordCharacter(_ byte: UInt8) -> Bool {
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-")
                || byte == UInt8(ascii: "+")
        }

        /// -?(0|[1-9][0-9]*) with no fraction or exponent, within Int.
        mutating func integer() -> Int? {
            var negative = false
            if bytes[index] == UInt8(ascii: "-") {
                negative = true
                index += 1
            }
            let start = index
            var magnitude = 0
            while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
                let (times, overflowTimes) = magnitude.multipliedReportingOverflow(by: 10)
                let (sum, overflowSum) = times.addingReportingOverflow(Int(bytes[index] - UInt8(ascii: "0")))
                guard !overflowTimes, !overflowSum else { return nil }
                magnitude = sum
                index += 1
            }
            let digits = index - start
            guard digits > 0, !(digits > 1 && bytes[start] == UInt8(ascii: "0")), !(negative && magnitude == 0) else { return nil }
            if index < bytes.count, Self.isWordCharacter(bytes[index]) { return nil }  // a fraction, an exponent
            return negative ? -magnitude : magnitude
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
    static func write(_ text: String, into buffer: inout ByteBuffer) {
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
    /// The spec in a request body, by `QuickJSON`'s reader; nil when the body needs the full decoder.
    static func quick(from body: ByteBuffer) -> ContainerSpec? {
        body.withUnsafeReadableBytes { bytes -> ContainerSpec? in
            // unsafe: the reader reads only within the buffer's readable bytes, during this closure.
            guard let fields = QuickJSON.flatObject(bytes) else { return nil }
            var spec = ContainerSpec(image: "")
            var hasImage = false
            for (key, value) in fields {
                switch (key, value) {
                case ("image", .string(let text)): spec.image = text; hasImage = true
                case ("name", .string(let text)): spec.name = text
                case ("hostname", .string(let text)): spec.hostname = text
                case ("stdin", .string(let text)): spec.stdin = text
                case ("pool", .string(let text)): spec.pool = text
                case ("forkPoint", .string(let text)):
                    guard let point = ForkPointName(rawValue: text) else { return nil }
                    spec.forkPoint = point
                case ("arguments", .strings(let items)): spec.arguments = items
                case ("entrypoint", .strings(let items)): spec.entrypoint = items
                case ("cmd", .strings(let items)): spec.cmd = items
                case ("environment", .strings(let items)): spec.environment = items
                case ("memoryMiB", .integer(let number)): spec.memoryMiB = number
                case ("memoryReservationMiB", .integer(let number)): spec.memoryReservationMiB = number
                case ("labels", .stringMap(let map)): spec.labels = map
                case ("openStdin", .boolean(let flag)): spec.openStdin = flag
                case ("tty", .boolean(let flag)): spec.tty = flag
                default: return nil
                }
            }
            return hasImage ? spec : nil
        }
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
