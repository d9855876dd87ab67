/// Where each child of a main fork point gets its own argc, argv and environment.
///
/// The parent ran its C library's start-up, which kept pointers into its initial stack:
/// glibc's `environ` points at the envp array and `_dl_auxv` at the auxiliary vector right
/// after it. A child's environment is therefore written in place over the parent's envp
/// array, which the parent was started with room for (padded with empty strings, which
/// getenv never matches); what follows the child's terminating null is never read again,
/// as the auxiliary vector is found through its saved pointer. The child's strings and argv
/// go in an area at the top of the stack that the parent left unused, and main is entered
/// with argc, argv and envp in RDI, RSI and RDX.
///
/// The child's argv is all its own, argv[0] included: main reads argv[0] from it (a
/// multi-call program such as busybox picks its applet by it, and a shell's `$0` is it), so
/// children that name the program differently ("ls", "/bin/sh") share one parent. What the
/// child keeps of its parent: `program_invocation_name` and `__libc_argv`, which the C
/// library set in the parent's start-up, point at the parent's argv (the image's command's
/// argv[0], seen only in the C library's own messages such as `error()`'s), and AT_RANDOM,
/// the stack canary and the pointer guard are re-randomised as at a stdin fork point
/// (`StartupRerandomisation`).
struct ChildArgumentRoom: Sendable {
    /// Bytes at the top of the stack left for each child's strings and argv (Linux allows
    /// 2 MiB of arguments and environment; a container's rarely reach a few KiB).
    static let areaBytes: UInt64 = 128 << 10
    /// Slots of the parent's envp array, the terminating null included.
    static let environmentSlots = 256

    let area: Range<UInt64>
    let environmentArray: UInt64
    let environmentSlots: Int

    /// Writes a child's arguments and environment into `space`; returns main's argc, argv
    /// and envp.
    func write(arguments: [String], environment: [String],
               into space: AddressSpace) throws(GuestError) -> (argc: UInt64, argv: UInt64, envp: UInt64) {
        guard environment.count < environmentSlots else {
            throw .childArgumentsTooLarge("\(environment.count) environment variables; a child of a main fork point takes at most \(environmentSlots - 1)")
        }
        let stringBytes = (arguments + environment).reduce(0) { $0 + $1.utf8.count + 1 }
        let arrayBytes = 8 * (arguments.count + 1)
        guard UInt64(stringBytes + arrayBytes + 16) <= UInt64(area.count) else {
            throw .childArgumentsTooLarge("\(stringBytes) bytes of arguments and environment; a child of a main fork point takes at most \(area.count - 16 - arrayBytes)")
        }
        // One buffer, written with one call: strings at the top, argv's array below them.
        var strings: [UInt8] = []
        strings.reserveCapacity(stringBytes)
        var offsets: [Int] = []
        offsets.reserveCapacity(arguments.count + environment.count)
        for string in arguments + environment {
            offsets.append(strings.count)
            strings.append(contentsOf: string.utf8)
            strings.append(0)
        }
        let stringsStart = area.upperBound - UInt64(stringBytes)
        let argv = (stringsStart - UInt64(arrayBytes)) & ~15
        var block = [UInt8](repeating: 0, count: Int(area.upperBound - argv))
        let pointers = offsets.map { stringsStart + UInt64($0) }
        // unsafe: argv's slots (8 * argc <= arrayBytes <= stringsStart - argv) and the strings (stringBytes, up to the top) lie in the block.
        block.withUnsafeMutableBytes { raw in
            for (index, pointer) in pointers.prefix(arguments.count).enumerated() {
                raw.storeBytes(of: pointer.littleEndian, toByteOffset: 8 * index, as: UInt64.self)
            }
            raw.baseAddress!.advanced(by: Int(stringsStart - argv)).copyMemory(from: strings, byteCount: strings.count)
        }
        var environmentWords = Array(pointers.dropFirst(arguments.count))
        environmentWords.append(0)
        // unsafe: the UInt64s' bytes are only copied into a new array, inside the closure.
        let environmentBytes = environmentWords.withUnsafeBytes { Array($0) }
        guard space.write(argv, block), space.write(environmentArray, environmentBytes) else {
            throw .childArgumentsTooLarge("the stack area for them is not writable")
        }
        return (UInt64(arguments.count), argv, environmentArray)
    }
}
