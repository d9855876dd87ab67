/// The stack a Linux program finds at its entry point: argc, argv, envp and the auxiliary
/// vector, with the strings and AT_RANDOM bytes above them. A fork child of an entry-point
/// parent gets its own written over the parent's, so it is kept apart from the loader.
struct InitialStack {
    var arguments: [[UInt8]]
    var environment: [[UInt8]]
    var executablePath: [UInt8]
    /// 16 bytes the C library seeds its stack protector and pointer guard from.
    var randomBytes: [UInt8]
    var hardwareCapabilities: UInt64
    /// AT_BASE: where the interpreter of a dynamically linked program was loaded (0: none).
    var interpreterBase: UInt64 = 0
    /// For the parent of a main fork point: slots of its envp array (the terminating null
    /// included), padded with empty strings, so that each child's own environment fits in
    /// place where the C library's `environ` already points.
    var environmentSlots: Int? = nil

    private enum Aux: UInt64 {
        case null = 0, phdr = 3, phent = 4, phnum = 5, pagesz = 6, base = 7, flags = 8, entry = 9
        case uid = 11, euid = 12, gid = 13, egid = 14, platform = 15, hwcap = 16, clktck = 17
        case secure = 23, random = 25, hwcap2 = 26, execfn = 31
    }

    /// Writes the stack below `top`; returns the initial stack pointer, where the AT_RANDOM
    /// bytes went (16-byte aligned) and where the envp array is.
    func write(into space: AddressSpace, top: UInt64, program: LoadedProgram,
               identity: GuestIdentity) throws(GuestError) -> (stackPointer: UInt64, randomBytes: UInt64, environment: UInt64) {
        var cursor = top
        func push(_ bytes: [UInt8]) throws(GuestError) -> UInt64 {
            cursor -= UInt64(bytes.count)
            guard space.write(cursor, bytes) else { throw .invalidExecutable("initial stack does not fit (\(bytes.count) bytes)") }
            return cursor
        }
        let execfn = try push(executablePath + [0])
        let platform = try push(Array("x86_64".utf8) + [0])
        cursor &= ~15
        let random = try push(randomBytes)
        var environmentPointers: [UInt64] = []
        for variable in environment.reversed() { environmentPointers.insert(try push(variable + [0]), at: 0) }
        if let slots = environmentSlots {
            guard environment.count < slots else {
                throw .invalidExecutable("the parent's environment has \(environment.count) variables; a main fork point holds at most \(slots - 1)")
            }
            let empty = try push([0])
            environmentPointers += Array(repeating: empty, count: slots - 1 - environment.count)
        }
        var argumentPointers: [UInt64] = []
        for argument in arguments.reversed() { argumentPointers.insert(try push(argument + [0]), at: 0) }

        let auxiliary: [(Aux, UInt64)] = [
            (.phdr, program.programHeaderAddress), (.phent, UInt64(program.programHeaderSize)),
            (.phnum, UInt64(program.programHeaderCount)), (.pagesz, AddressSpace.pageSize), (.base, interpreterBase), (.flags, 0),
            (.entry, program.entry), (.uid, UInt64(identity.uid)), (.euid, UInt64(identity.uid)),
            (.gid, UInt64(identity.gid)), (.egid, UInt64(identity.gid)), (.platform, platform),
            (.hwcap, hardwareCapabilities), (.clktck, 100), (.secure, 0), (.random, random), (.hwcap2, 0),
            (.execfn, execfn), (.null, 0),
        ]
        var words: [UInt64] = [UInt64(arguments.count)]
        words += argumentPointers + [0] + environmentPointers + [0]
        for (key, value) in auxiliary { words += [key.rawValue, value] }
        cursor = (cursor - UInt64(words.count * 8)) & ~15
        // unsafe: the UInt64s' bytes (little-endian on x86-64, as the guest reads them) are only copied into a new array.
        let bytes = words.withUnsafeBytes { Array($0) }
        guard space.write(cursor, bytes) else { throw .invalidExecutable("initial stack does not fit") }
        return (cursor, random, cursor + UInt64(8 * (1 + arguments.count + 1)))
    }
}
