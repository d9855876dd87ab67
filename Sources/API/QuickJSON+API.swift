import Engine
import Foundation
import NIOCore

// QuickJSON (in Engine) on NIO's buffers: the API's request bodies and answers.

extension ByteBuffer: QuickJSONSink {
    public mutating func appendByte(_ byte: UInt8) { writeInteger(byte) }
    public mutating func appendUTF8(_ text: Substring.UTF8View) { writeSubstring(Substring(text)) }
    public mutating func appendStatic(_ text: StaticString) { writeStaticString(text) }
}

extension QuickJSON {
    public static func parse(_ buffer: ByteBuffer) -> Node? {
        // unsafe: the reader reads only within the buffer's readable bytes, during this closure.
        buffer.withUnsafeReadableBytes { parse($0) }
    }
}

extension ContainerSpec {
    /// The spec in a request body, by `QuickJSON`; nil when the body needs the full decoder
    /// (which `decodeStrict` runs: no unknown field, no null, each of its type).
    static func quick(from body: ByteBuffer) -> ContainerSpec? {
        QuickJSON.parse(body).flatMap(ContainerSpec.quick)
    }
}

extension ExitInfo {
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
    /// The JSON the API answers a run with (`quickBytes`, which a worker writes too).
    func quickJSON() -> ByteBuffer? { quickBytes().map { ByteBuffer(bytes: $0) } }
}
