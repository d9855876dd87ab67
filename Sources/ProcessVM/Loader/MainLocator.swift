/// Finds a program's `main` without symbols, from its entry point: glibc's x86-64 `_start`
/// (sysdeps/x86_64/start.S) is a fixed sequence that loads `main`'s address into RDI and
/// calls `__libc_start_main`. The sequence is matched instruction by instruction, in the
/// forms gcc and glibc have emitted (absolute for a position-dependent program, RIP-relative
/// for a PIE; with or without the init/fini arguments glibc dropped in 2.34, with or without
/// `endbr64`); anything else is refused with what was found, never guessed at.
enum MainLocator {
    /// Why `main` could not be found.
    struct Refusal: Error, CustomStringConvertible {
        let description: String
    }

    /// Bytes read from the entry point: enough for the longest form of the sequence.
    static let window = 64

    /// One step of the sequence: the encodings it accepts, and what it yields.
    private enum Step {
        /// One of these exact byte strings.
        case exact([[UInt8]], String)
        /// An opcode followed by a 32-bit immediate or displacement: `absolute` for a
        /// sign-extended immediate, else RIP-relative. `yieldsMain` for the load of RDI.
        case withOperand([(opcode: [UInt8], absolute: Bool)], String, yieldsMain: Bool)
    }

    private static let steps: [Step] = [
        .exact([[0x31, 0xED]], "xor %ebp,%ebp"),
        .exact([[0x49, 0x89, 0xD1]], "mov %rdx,%r9"),
        .exact([[0x5E]], "pop %rsi"),
        .exact([[0x48, 0x89, 0xE2]], "mov %rsp,%rdx"),
        .exact([[0x48, 0x83, 0xE4, 0xF0]], "and $-16,%rsp"),
        .exact([[0x50]], "push %rax"),
        .exact([[0x54]], "push %rsp"),
        // R8 (fini): zero since glibc 2.34, else __libc_csu_fini.
        .withOperand([([0x45, 0x31, 0xC0], true), ([0x49, 0xC7, 0xC0], true), ([0x4C, 0x8D, 0x05], false)], "load of %r8", yieldsMain: false),
        // RCX (init): likewise.
        .withOperand([([0x31, 0xC9], true), ([0x48, 0xC7, 0xC1], true), ([0x48, 0x8D, 0x0D], false)], "load of %rcx", yieldsMain: false),
        // RDI: main.
        .withOperand([([0x48, 0xC7, 0xC7], true), ([0x48, 0x8D, 0x3D], false)], "load of main into %rdi", yieldsMain: true),
        // The call of __libc_start_main: direct (with or without the addr32 prefix) or
        // through the GOT.
        .withOperand([([0x67, 0xE8], false), ([0xE8], false), ([0xFF, 0x15], false)], "call of __libc_start_main", yieldsMain: false),
    ]

    /// `main`'s address, given the bytes at the entry point `entry`.
    static func locateMain(entry: UInt64, code: [UInt8]) throws(Refusal) -> UInt64 {
        var offset = 0
        // Intel CET's landing pad, where glibc was built with it.
        if code.starts(with: [0xF3, 0x0F, 0x1E, 0xFA]) { offset = 4 }
        var main: UInt64?
        for step in steps {
            switch step {
            case .exact(let encodings, let name):
                guard let match = encodings.first(where: { code.dropFirst(offset).starts(with: $0) }) else {
                    throw refusal(expected: name, at: offset, entry: entry, code: code)
                }
                offset += match.count
            case .withOperand(let encodings, let name, let yieldsMain):
                // `xor` forms carry no operand: they are the two-byte and three-byte zeroings.
                guard let match = encodings.first(where: { code.dropFirst(offset).starts(with: $0.opcode) }) else {
                    throw refusal(expected: name, at: offset, entry: entry, code: code)
                }
                let isZeroing = match.opcode == [0x45, 0x31, 0xC0] || match.opcode == [0x31, 0xC9]
                offset += match.opcode.count
                if isZeroing { continue }
                guard offset + 4 <= code.count else { throw refusal(expected: name, at: offset, entry: entry, code: code) }
                let operand = Int32(bitPattern: UInt32(code[offset]) | UInt32(code[offset + 1]) << 8
                    | UInt32(code[offset + 2]) << 16 | UInt32(code[offset + 3]) << 24)
                offset += 4
                guard yieldsMain else { continue }
                let nextInstruction = entry &+ UInt64(offset)
                main = match.absolute ? UInt64(bitPattern: Int64(operand)) : nextInstruction &+ UInt64(bitPattern: Int64(operand))
            }
        }
        guard let main else { throw Refusal(description: "the entry point's code loads no address of main") }
        return main
    }

    private static func refusal(expected: String, at offset: Int, entry: UInt64, code: [UInt8]) -> Refusal {
        let bytes = code.dropFirst(offset).prefix(8).map { String($0, radix: 16).leftPadded(to: 2) }.joined(separator: " ")
        return Refusal(description: "its entry point is not glibc's _start: expected the \(expected) at 0x\(String(entry + UInt64(offset), radix: 16)), "
            + "found \(bytes.isEmpty ? "nothing" : bytes)")
    }
}

private extension String {
    func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}
