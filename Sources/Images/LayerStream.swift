import CShims
import Foundation

/// A small layer's tar, inflated once into memory (`LayerStream.inflate`), so that the folder
/// and the layer disk, written at once, read it without each gunzipping the blob again.
final class InflatedLayer: Sendable {
    let bytes: [UInt8]
    /// The sha256 of `bytes`: the layer's diff_id if the blob is what the config says.
    let digest: Digest

    init(bytes: [UInt8], digest: Digest) {
        self.bytes = bytes
        self.digest = digest
    }
}

/// The uncompressed bytes of a layer blob in the blob store: gunzipped when the blob is gzip,
/// decoded when it is zstd (each by its magic, whatever the media type says), hashed as they
/// go by (the layer's diff_id), and cut off past `maxBytes` (a bomb is refused, not unpacked).
/// Or an `InflatedLayer`'s bytes, already decoded, hashed and within the limit.
final class LayerStream {
    let layer: String
    /// -1 when the bytes come from `inflated`.
    private let fd: Int32
    private let inflated: InflatedLayer?
    private var inflatedOffset = 0
    private let maxBytes: Int64
    private var gunzip: OpaquePointer?
    private var zstd: OpaquePointer?
    /// zstd: whether the last byte consumed ended a frame (the stream may end there).
    private var frameEnded = false
    /// zstd: where a step writes its error message (one buffer, not one per step).
    private var zstdMessage = [CChar](repeating: 0, count: 256)
    private var input = [UInt8](repeating: 0, count: 256 * 1024)
    private var inputStart = 0
    private var inputEnd = 0
    private var inputDone = false
    private var memberEnded = false
    private var hasher = SHA256()
    private(set) var produced: Int64 = 0

    /// The bytes of `inflated` (decoded and hashed already).
    init(inflated: InflatedLayer, layer: String) {
        self.layer = layer
        self.inflated = inflated
        maxBytes = Int64(inflated.bytes.count)
        fd = -1
    }

    /// The layer blob `file`'s tar in memory when it is at most `cap` bytes (a gzip blob's
    /// trailer says its size modulo 4 GiB: one saying more is not tried; a trailer that lies
    /// costs at most `cap` bytes of decoding). nil when it is larger, or when decoding fails:
    /// the blob is then read as a stream, which tells what is wrong with it.
    /// `wholeMembers` false keeps to zlib's streaming decoder even where libdeflate is (for tests).
    static func inflate(file: URL, layer: String, maxBytes: Int64, cap: Int, wholeMembers: Bool = true) -> InflatedLayer? {
        let limit = min(Int64(cap), maxBytes)
        var hint = 0
        if let handle = FileHandle(forReadingAtPath: file.path) {
            defer { try? handle.close() }
            if let size = try? handle.seekToEnd(), size >= 4, (try? handle.seek(toOffset: size - 4)) != nil,
               let trailer = try? handle.readToEnd(), trailer.count == 4 {
                // The gzip trailer's ISIZE, little-endian.
                hint = trailer.reversed().reduce(0) { $0 << 8 | Int($1) }
            }
        }
        guard let stream = try? LayerStream(file: file, layer: layer, maxBytes: limit) else { return nil }
        if stream.gunzip != nil, hint > limit { return nil }
        if stream.gunzip != nil, wholeMembers, cshims_deflate_available() != 0 {
            switch gunzipWhole(file: file, hint: hint, limit: limit) {
            case .inflated(let layer): return layer
            case .invalid: return nil
            case .notWhole: break
            }
        }
        // One byte more than the trailer says, so that the read finding the end has room.
        var bytes = [UInt8](repeating: 0, count: (stream.gunzip != nil ? max(hint, 4096) : 64 << 10) + 1)
        var filled = 0
        while true {
            if filled == bytes.count {
                // (The stream refuses to go past `limit`: at most twice that is ever held.)
                guard filled <= limit else { return nil }
                bytes += [UInt8](repeating: 0, count: bytes.count)
            }
            let count: Int
            do {
                // unsafe: the array's view lives only for the read; filled < bytes.count (grown above when full), so raw[filled...] is not empty.
                count = try bytes.withUnsafeMutableBytes { raw throws(ImageError) in
                    // unsafe: [filled, count) lies inside the array's storage.
                    try stream.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[filled...]))
                }
            } catch { return nil }
            if count == 0 { break }
            filled += count
        }
        bytes.removeSubrange(filled...)
        return InflatedLayer(bytes: bytes, digest: stream.finishDigest())
    }

    enum WholeGunzip {
        case inflated(InflatedLayer)
        /// Not a valid gzip stream: left to the streaming decoder, which names the problem.
        case invalid
        /// Larger than its trailer said (several members, or a trailer that lies): decoded
        /// by the streaming decoder instead.
        case notWhole
    }

    /// The gzip blob `file` decoded member by member with libdeflate (about twice zlib's speed)
    /// into a buffer of the trailer's size; zero padding after the last member is allowed, as
    /// the streaming decoder allows it.
    private static func gunzipWhole(file: URL, hint: Int, limit: Int64) -> WholeGunzip {
        guard let data = FileManager.default.contents(atPath: file.path),
              Int64(data.count) <= limit + limit / 64 + 4096 else { return .notWhole }
        let input = [UInt8](data)
        var output = [UInt8](repeating: 0, count: min(hint, Int(limit)) + 1)
        var position = 0, filled = 0
        while position < input.count {
            if input[position] == 0, input[position...].allSatisfy({ $0 == 0 }) { break }
            var consumed = 0, produced = 0
            // unsafe: both views live only for the one call; position < input.count (the loop's condition), filled < output.count (checked below).
            let result = input.withUnsafeBytes { source in
                output.withUnsafeMutableBytes { target in
                    // unsafe: both ranges lie inside their arrays ([position, count) and [filled, count)).
                    cshims_deflate_gunzip_member(source.baseAddress!.assumingMemoryBound(to: UInt8.self) + position, source.count - position, &consumed,
                                                 target.baseAddress!.assumingMemoryBound(to: UInt8.self) + filled, target.count - filled, &produced)
                }
            }
            if result < 0 { return .invalid }
            if result > 0 { return .notWhole }
            position += consumed
            filled += produced
            if filled == output.count { return .notWhole }
        }
        guard position > 0, Int64(filled) <= limit else { return .notWhole }
        output.removeSubrange(filled...)
        var hasher = SHA256()
        hasher.update(output)
        return .inflated(InflatedLayer(bytes: output, digest: Digest(unchecked: hasher.finishHex())))
    }

    init(file: URL, layer: String, maxBytes: Int64) throws(ImageError) {
        self.layer = layer
        self.maxBytes = maxBytes
        inflated = nil
        fd = open(file.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io("cannot open layer blob \(file.path): \(String(cString: strerror(errno)))") }
        try fillInput()
        if inputEnd - inputStart >= 2, input[inputStart] == 0x1F, input[inputStart + 1] == 0x8B {
            gunzip = cshims_gunzip_new()
            // Not closed here: the object is whole, so its deinit runs and closes `fd`.
            guard gunzip != nil else { throw .io("out of memory for a gzip stream") }
        } else if inputEnd - inputStart >= 4, input[inputStart..<inputStart + 4].elementsEqual([0x28, 0xB5, 0x2F, 0xFD]) {
            var message = [CChar](repeating: 0, count: 256)
            zstd = cshims_zstd_new(&message, message.count)
            guard zstd != nil else {
                throw .unsupported("layer \(layer) is zstd-compressed and cannot be decoded here: \(Self.text(message))")
            }
        }
    }

    deinit {
        cshims_gunzip_free(gunzip)
        cshims_zstd_free(zstd)
        if fd >= 0 { close(fd) }
    }

    /// The sha256 of every uncompressed byte read; call once, at the end.
    func finishDigest() -> Digest {
        if let inflated { return inflated.digest }
        return Digest(unchecked: hasher.finishHex())
    }

    private func fillInput() throws(ImageError) {
        if inputStart == inputEnd { inputStart = 0; inputEnd = 0 }
        guard !inputDone, inputEnd < input.count else { return }
        // unsafe: the view lives only for the read; inputEnd < input.count (the guard above).
        let count = input.withUnsafeMutableBytes { raw in
            // unsafe: read writes within the buffer's free tail, from inputEnd on.
            Foundation.read(fd, raw.baseAddress! + inputEnd, raw.count - inputEnd)
        }
        if count < 0 { throw .io("reading layer \(layer) failed: \(String(cString: strerror(errno)))") }
        if count == 0 { inputDone = true }
        inputEnd += count
    }

    private func compactInput() {
        guard inputStart > 0 else { return }
        input.replaceSubrange(0..<(inputEnd - inputStart), with: input[inputStart..<inputEnd])
        inputEnd -= inputStart
        inputStart = 0
    }

    /// One zstd step into `buffer`: the bytes it produced (0 at the end of the input, when the
    /// last frame is whole; a truncated or corrupt stream throws).
    private func zstdStep(_ zstd: OpaquePointer, into buffer: UnsafeMutableRawBufferPointer) throws(ImageError) -> Int {
        while true {
            var consumed = 0, produced = 0
            // unsafe: the input's view lives only for the step; zstdMessage is passed with its own count.
            let result = input.withUnsafeBytes { raw in
                // unsafe: the input range [inputStart, inputEnd) and the caller's buffer are both in bounds.
                cshims_zstd_step(zstd, raw.baseAddress!.assumingMemoryBound(to: UInt8.self) + inputStart, inputEnd - inputStart, &consumed,
                                 buffer.baseAddress!.assumingMemoryBound(to: UInt8.self), buffer.count, &produced, &zstdMessage, zstdMessage.count)
            }
            inputStart += consumed
            if result < 0 { throw .unsafeLayer(layer: layer, entry: "-", problem: "not a valid zstd stream (\(Self.text(zstdMessage)))") }
            if consumed > 0 || produced > 0 { frameEnded = result == 1 }
            if produced > 0 { return produced }
            if inputStart < inputEnd { continue }
            if inputDone {
                guard frameEnded else { throw .unsafeLayer(layer: layer, entry: "-", problem: "the zstd stream is truncated") }
                return 0
            }
            try fillInput()
        }
    }

    /// A C message buffer's text, up to its NUL.
    static func text(_ message: [CChar]) -> String {
        String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Fills `buffer` with the next uncompressed bytes; 0 at the end of the layer.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(ImageError) -> Int {
        if let inflated {
            let count = min(buffer.count, inflated.bytes.count - inflatedOffset)
            if count == 0 { return 0 }
            // unsafe: the inflated bytes' view lives only for the copy; inflatedOffset + count <= their count.
            inflated.bytes.withUnsafeBytes { raw in
                // unsafe: count bytes fit both the remaining bytes and the caller's buffer.
                buffer.baseAddress!.copyMemory(from: raw.baseAddress! + inflatedOffset, byteCount: count)
            }
            inflatedOffset += count
            produced += Int64(count)
            return count
        }
        while true {
            if inputStart == inputEnd { try fillInput() }
            var count = 0
            if let gunzip {
                if memberEnded {
                    // After a gzip member: another member, zero padding, or the end.
                    if inputStart == inputEnd && inputDone { return 0 }
                    if input[inputStart] == 0 {
                        guard input[inputStart..<inputEnd].allSatisfy({ $0 == 0 }) else {
                            throw .unsafeLayer(layer: layer, entry: "-", problem: "data after the end of the gzip stream")
                        }
                        inputStart = inputEnd
                        continue
                    }
                    guard cshims_gunzip_reset(gunzip) == 0 else { throw .io("gzip reset failed") }
                    memberEnded = false
                }
                if inputStart == inputEnd && inputDone {
                    throw .unsafeLayer(layer: layer, entry: "-", problem: "the gzip stream is truncated")
                }
                var consumed = 0
                // unsafe: the input's view lives only for the step; inputStart <= inputEnd <= input.count.
                let result = input.withUnsafeBytes { raw in
                    // unsafe: the input range [inputStart, inputEnd) and the caller's buffer are both in bounds.
                    cshims_gunzip_step(gunzip, raw.baseAddress!.assumingMemoryBound(to: UInt8.self) + inputStart, inputEnd - inputStart, &consumed,
                                       buffer.baseAddress!.assumingMemoryBound(to: UInt8.self), buffer.count, &count)
                }
                inputStart += consumed
                if result < 0 { throw .unsafeLayer(layer: layer, entry: "-", problem: "not a valid gzip stream (zlib error \(result))") }
                if result == 1 { memberEnded = true }
                if count == 0 && consumed == 0 && result == 0 {
                    // No progress: zlib needs input beyond what is buffered.
                    if inputDone { throw .unsafeLayer(layer: layer, entry: "-", problem: "the gzip stream is truncated") }
                    compactInput()
                    try fillInput()
                }
            } else if let zstd {
                count = try zstdStep(zstd, into: buffer)
                if count == 0, inputStart == inputEnd, inputDone { return 0 }
            } else {
                if inputStart == inputEnd && inputDone { return 0 }
                count = min(buffer.count, inputEnd - inputStart)
                // unsafe: the input's view lives only for the copy; count <= inputEnd - inputStart.
                input.withUnsafeBytes { raw in
                    // unsafe: count bytes fit both the input range and the caller's buffer.
                    buffer.baseAddress!.copyMemory(from: raw.baseAddress! + inputStart, byteCount: count)
                }
                inputStart += count
            }
            if count > 0 {
                produced += Int64(count)
                if produced > maxBytes {
                    throw .unsafeLayer(layer: layer, entry: "-", problem: "uncompresses to more than the \(maxBytes)-byte limit")
                }
                hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
                return count
            }
        }
    }
}
