import CShims

/// Inflates one streamOptimized grain (a zlib stream) into exactly `grainBytes` bytes; a grain
/// that inflates short (the disk's last) is padded with zeros.
func inflateGrain(_ compressed: [UInt8], grainBytes: Int, file: String, field: String) throws(DiskError) -> [UInt8] {
    var output = [UInt8](repeating: 0, count: grainBytes)
    var produced = grainBytes
    // unsafe: zlib writes at most `produced` (grainBytes, the output's count) bytes and reads input.count, during both closures.
    let result = output.withUnsafeMutableBufferPointer { out in
        compressed.withUnsafeBufferPointer { input in
            cshims_zlib_uncompress(out.baseAddress, &produced, input.baseAddress, input.count)
        }
    }
    guard result == 0 else {
        let reason = result == -5 ? "inflates to more than the grain's \(grainBytes) bytes" : "is not a valid zlib stream (zlib error \(result))"
        throw .malformed(file: file, field: field, problem: "the compressed data \(reason)")
    }
    return output
}
