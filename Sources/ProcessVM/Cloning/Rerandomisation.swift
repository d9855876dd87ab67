import CShims
import Foundation

/// glibc's x86-64 thread control block header (`tcbhead_t`), at the thread pointer (the FS
/// base), and the two secrets it keeps there, which glibc draws from AT_RANDOM at start-up.
enum GlibcTCB {
    /// The x86-64 TLS ABI keeps the thread pointer's own value at %fs:0 (glibc's `tcb`).
    static let selfPointerOffset = 0x00
    /// `stack_guard`: the stack protector's canary, which gcc's prologues read at %fs:0x28.
    static let stackGuardOffset = 0x28
    /// `pointer_guard`: the key of glibc's pointer mangling (PTR_MANGLE).
    static let pointerGuardOffset = 0x30
    /// Bytes of the header read here: up to the end of the pointer guard.
    static let headerBytes = 0x38
    /// A machine word: the canary, the guard and every pointer are one, 8-byte aligned.
    static let wordBytes = MemoryLayout<UInt64>.size
    /// AT_RANDOM's bytes: the canary's word, then the guard's.
    static let randomByteCount = 16

    /// PTR_MANGLE on x86-64: `xor guard; rol 0x11`.
    static let manglingRotation: UInt64 = 0x11

    static func mangle(_ pointer: UInt64, key: UInt64) -> UInt64 {
        let value = pointer ^ key
        return value << manglingRotation | value >> (64 - manglingRotation)
    }

    static func demangle(_ word: UInt64, key: UInt64) -> UInt64 {
        (word >> manglingRotation | word << (64 - manglingRotation)) ^ key
    }

    /// The canary glibc makes from AT_RANDOM (`_dl_setup_stack_chk_guard`): its first 8 bytes,
    /// little-endian, with the low byte zeroed so that a string copy cannot reproduce it.
    static func canary(fromRandom bytes: [UInt8]) -> UInt64 { word(bytes, at: 0) & ~0xFF }

    /// The pointer guard glibc makes from AT_RANDOM (`_dl_setup_pointer_guard`): bytes 8-15.
    static func pointerGuard(fromRandom bytes: [UInt8]) -> UInt64 { word(bytes, at: wordBytes) }

    /// The little-endian word at `offset` of `bytes`.
    static func word(_ bytes: some RandomAccessCollection<UInt8>, at offset: Int) -> UInt64 {
        bytes.dropFirst(offset).prefix(wordBytes).reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// glibc's x86-64 `__jmp_buf`: eight words, of which RBP, RSP and the PC are mangled
    /// (`JB_RBP`, `JB_RSP`, `JB_PC`).
    enum JumpBuffer {
        static let rbpIndex = 1
        static let rspIndex = 6
        static let pcIndex = 7
    }
}

/// AT_RANDOM's 16 bytes and the canary and pointer guard glibc would draw from them: what a
/// child of a stdin fork point gets afresh instead of its parent's.
struct StartupSecrets: Sendable {
    let randomBytes: [UInt8]
    let canary: UInt64
    let pointerGuard: UInt64

    init(randomBytes: [UInt8]) {
        self.randomBytes = randomBytes
        canary = GlibcTCB.canary(fromRandom: randomBytes)
        pointerGuard = GlibcTCB.pointerGuard(fromRandom: randomBytes)
    }
}

/// How the children of one warm parent get start-up secrets of their own.
///
/// A parent frozen at its first read of standard input has run its C library's start-up:
/// glibc drew the stack-protector canary (%fs:0x28) and the pointer guard (%fs:0x30) from
/// the parent's AT_RANDOM, and every frame then active saved the canary, every pointer glibc
/// protects (jmp_buf registers, atexit handlers, ...) was mangled with the guard. Children
/// would all share them. Changing the TCB's copies alone would break what the child inherits
/// (an inherited frame's epilogue check would fail, an inherited setjmp buffer would demangle
/// to garbage), so the parent is searched once, when it is frozen, for every place that holds
/// its canary, its guard or a pointer mangled with it, and each child has fresh values written
/// at those places — a few words, in its VM's preparation, before the fork.
///
/// Found in the parent's user memory (every page but pure code, 8-byte-aligned words, frames
/// the parent never wrote skipped) and its callee-saved registers:
/// - the canary: a word equal to it;
/// - the guard: a word equal to it (the TCB's, and any copy);
/// - a mangled pointer: a word that demangles with the guard to an address the parent maps,
///   or to null; and the RBP word of a jmp_buf whose RSP and PC words are mangled pointers to
///   a writable and an executable page (glibc mangles RBP whatever it holds).
///
/// False positives (a word taken for one of these that is not): an unrelated word equals the
/// canary with odds 2^-56 (its 56 random bits), the guard 2^-64; with the guard uniformly
/// random and independent of the word, a word demangles into M mapped bytes with odds
/// M / 2^64 — for a 64 MiB VM at most 2^-38 per word, 2^-15 over all its 2^23 words, and
/// about 2^-26 for busybox sh (106 pages searched, 4 MiB mapped). Such a word would be
/// changed in the child (XORed with the old and new guards rotated). Misses: a pointer mangled to a value outside the
/// parent's mappings (other than null or a jmp_buf's RBP) keeps the old guard's mangling and
/// demangles to garbage in the child, as would a copy in a page the scan skips (pure code).
/// Caller-saved registers (vector ones included) are not searched: nothing live crosses the
/// parent's read in them, and a dead copy only shows the child the parent's old values.
///
/// The TCB must be glibc's as the engine can verify it: the FS base inside the program's
/// writable memory, its own address at %fs:0, and the canary and guard there exactly those
/// glibc draws from the AT_RANDOM bytes the engine gave the parent. Otherwise the canary and
/// guard stay the parent's (with the reason, logged when the parent is frozen); AT_RANDOM is
/// refreshed either way while it still holds the parent's bytes.
public struct StartupRerandomisation: Sendable, CustomStringConvertible {
    public enum Outcome: Sendable, Equatable {
        /// An entry-point parent: each child runs its own start-up from its own AT_RANDOM.
        case notNeeded
        /// Each child gets its own canary and pointer guard, written over the parent's at
        /// these many places (registers included).
        case rerandomised(canaryCopies: Int, pointerGuardCopies: Int, mangledPointers: Int)
        /// Children keep the parent's canary and pointer guard, for this reason.
        case skipped(reason: String)
    }

    public let outcome: Outcome
    /// How long the search of the parent took, when it was frozen.
    public internal(set) var searchTime: Duration = .zero
    /// Pages of the parent searched (what the odds of a false positive grow with).
    public let pagesSearched: Int
    /// Bytes the parent drew from getrandom before its fork point, which every child shares:
    /// whatever they seeded (glibc's malloc tcache key, arc4random, a hash seed) is the same
    /// in every child, and cannot be drawn again without knowing what was derived from it.
    public internal(set) var sharedRandomBytes = 0
    /// Whether each child gets fresh AT_RANDOM bytes.
    public var refreshesRandomBytes: Bool { randomBytesFrame != nil }

    enum Kind: Sendable, Equatable {
        case canary
        case pointerGuard
        /// A pointer mangled with the guard (its value, demangled).
        case mangled(UInt64)

        func value(for secrets: StartupSecrets) -> UInt64 {
            switch self {
            case .canary: return secrets.canary
            case .pointerGuard: return secrets.pointerGuard
            case .mangled(let pointer): return GlibcTCB.mangle(pointer, key: secrets.pointerGuard)
            }
        }
    }

    /// A callee-saved register: the only ones that may hold a caller's value across the
    /// parent's read (the others hold the call's arguments or nothing live).
    enum Register: CaseIterable, Sendable {
        case rbx, rbp, r12, r13, r14, r15

        func value(in registers: kvm_regs) -> UInt64 {
            switch self {
            case .rbx: return registers.rbx
            case .rbp: return registers.rbp
            case .r12: return registers.r12
            case .r13: return registers.r13
            case .r14: return registers.r14
            case .r15: return registers.r15
            }
        }

        func set(_ value: UInt64, in registers: inout kvm_regs) {
            switch self {
            case .rbx: registers.rbx = value
            case .rbp: registers.rbp = value
            case .r12: registers.r12 = value
            case .r13: registers.r13 = value
            case .r14: registers.r14 = value
            case .r15: registers.r15 = value
            }
        }
    }

    /// Guest-physical places to rewrite in each child (8-byte aligned, so inside one frame).
    let memorySites: [(physical: UInt64, kind: Kind)]
    let registerSites: [(register: Register, kind: Kind)]
    /// Guest-physical address of the parent's 16 AT_RANDOM bytes (16-byte aligned).
    let randomBytesFrame: UInt64?
    /// The parent's canary and guard, which no child may draw again.
    private let parentSecrets: (canary: UInt64, pointerGuard: UInt64)?

    /// The most places a child may need rewritten: a parent holding more copies is not
    /// re-randomised (each place costs every child a write, and its page a copy).
    public static let maximumSites = 1024

    static let notNeeded = StartupRerandomisation(outcome: .notNeeded, memorySites: [], registerSites: [], randomBytesFrame: nil,
                                                  parentSecrets: nil, pagesSearched: 0)

    private init(outcome: Outcome, memorySites: [(physical: UInt64, kind: Kind)], registerSites: [(register: Register, kind: Kind)],
                 randomBytesFrame: UInt64?, parentSecrets: (canary: UInt64, pointerGuard: UInt64)?, pagesSearched: Int) {
        self.outcome = outcome
        self.pagesSearched = pagesSearched
        self.memorySites = memorySites
        self.registerSites = registerSites
        self.randomBytesFrame = randomBytesFrame
        self.parentSecrets = parentSecrets
    }

    public var description: String {
        let shared = sharedRandomBytes == 0 ? ""
            : "; children share the \(sharedRandomBytes) bytes the parent drew from getrandom before its fork point"
        return secretsDescription + shared
    }

    private var secretsDescription: String {
        let randomBytes = refreshesRandomBytes ? "its own AT_RANDOM" : "the parent's AT_RANDOM (no longer where the engine put it)"
        switch outcome {
        case .notNeeded:
            return "each child starts afresh from its own AT_RANDOM"
        case .rerandomised(let canaries, let guards, let mangled):
            let microseconds = searchTime.components.seconds * 1_000_000 + searchTime.components.attoseconds / 1_000_000_000_000
            let pages = Set(memorySites.map { AddressSpace.pageDown($0.physical) }).count
            return "each child gets its own canary, pointer guard and AT_RANDOM, written at \(canaries) copies of the canary, "
                + "\(guards) of the guard and \(mangled) mangled pointers (\(memorySites.count) words on \(pages) pages, "
                + "\(registerSites.count) registers; found in \(pagesSearched) pages in \(microseconds) µs when the parent was frozen)"
        case .skipped(let reason):
            return "children keep the parent's canary and pointer guard (\(reason)) and get \(randomBytes)"
        }
    }

    // MARK: Per child

    /// Draws a child's secrets and writes them into `memory`, a child's copy of the parent's
    /// memory with the parent's page tables: AT_RANDOM's bytes, and each place found. Nil
    /// when there is nothing to re-randomise.
    func apply(to memory: GuestMemory) -> StartupSecrets? {
        guard outcome != .notNeeded, randomBytesFrame != nil || !memorySites.isEmpty || !registerSites.isEmpty else { return nil }
        var secrets = StartupSecrets(randomBytes: ProcessVM.freshRandomBytes(GlibcTCB.randomByteCount))
        // Never the parent's again (odds 2^-56 that a draw would be).
        while let parentSecrets, secrets.canary == parentSecrets.canary || secrets.pointerGuard == parentSecrets.pointerGuard {
            secrets = StartupSecrets(randomBytes: ProcessVM.freshRandomBytes(GlibcTCB.randomByteCount))
        }
        if let randomBytesFrame, let target = memory.pointer(physical: randomBytesFrame, length: secrets.randomBytes.count) {
            // unsafe: `pointer` checked that the bytes lie inside guest memory; the array is not empty, and exactly its count is copied.
            secrets.randomBytes.withUnsafeBytes { target.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }
        for site in memorySites {
            guard let target = memory.pointer(physical: site.physical, length: GlibcTCB.wordBytes) else { continue }
            // unsafe: `pointer` checked that the word lies inside guest memory.
            target.storeBytes(of: site.kind.value(for: secrets), as: UInt64.self)
        }
        return secrets
    }

    /// Writes a child's secrets into its registers (those that held the parent's).
    func apply(_ secrets: StartupSecrets, to registers: inout kvm_regs) {
        for site in registerSites { site.register.set(site.kind.value(for: secrets), in: &registers) }
    }

    // MARK: Once per parent

    /// Finds what a child of `parent`, frozen at its first read of standard input with
    /// `registers` and FS base `fsBase`, shares with it (see the type's description). The
    /// guest is untrusted: every value it left is read once from its memory through its page
    /// tables and checked before use; nothing of the parent's memory is written.
    static func find(in space: AddressSpace, holes: [Range<Int>], registers: kvm_regs, fsBase: UInt64,
                     parentRandom: (address: UInt64, bytes: [UInt8])?) -> StartupRerandomisation {
        let randomBytesFrame = parentRandom.flatMap { randomFrame(of: $0, in: space) }
        func skipped(_ reason: String) -> StartupRerandomisation {
            StartupRerandomisation(outcome: .skipped(reason: reason), memorySites: [], registerSites: [],
                                   randomBytesFrame: randomBytesFrame, parentSecrets: nil, pagesSearched: 0)
        }
        guard let parentRandom else { return skipped("the engine has no record of the parent's AT_RANDOM bytes") }
        guard fsBase != 0 else { return skipped("the program set no thread pointer (FS base 0)") }
        let hexBase = "0x" + String(fsBase, radix: 16)
        // Inside one of the program's own mappings (not the engine's pages it may reach), readable
        // and writable where the secrets are.
        guard fsBase % UInt64(GlibcTCB.wordBytes) == 0, fsBase <= AddressSpace.userTop - UInt64(GlibcTCB.headerBytes),
              space.regions.contains(where: { $0.start <= fsBase && fsBase + UInt64(GlibcTCB.headerBytes) <= $0.end }),
              let header = space.read(fsBase, count: GlibcTCB.headerBytes),
              space.permissions(at: fsBase + UInt64(GlibcTCB.stackGuardOffset))?.contains(.write) == true,
              space.permissions(at: fsBase + UInt64(GlibcTCB.pointerGuardOffset))?.contains(.write) == true else {
            return skipped("the thread pointer \(hexBase) is not an aligned address in the program's writable memory")
        }
        func headerWord(_ offset: Int) -> UInt64 { GlibcTCB.word(header, at: offset) }
        guard headerWord(GlibcTCB.selfPointerOffset) == fsBase else {
            return skipped("no thread control block at \(hexBase): %fs:0 does not hold the thread pointer")
        }
        let canary = headerWord(GlibcTCB.stackGuardOffset)
        let pointerGuard = headerWord(GlibcTCB.pointerGuardOffset)
        guard canary == GlibcTCB.canary(fromRandom: parentRandom.bytes),
              pointerGuard == GlibcTCB.pointerGuard(fromRandom: parentRandom.bytes) else {
            return skipped("%fs:0x28 and %fs:0x30 do not hold the canary and pointer guard glibc draws from AT_RANDOM (not glibc?)")
        }
        var scanner = Scanner(space: space, holes: holes, canary: canary, pointerGuard: pointerGuard)
        let registerSites: [(register: Register, kind: Kind)] = Register.allCases.compactMap { register in
            scanner.classify(register.value(in: registers)).map { (register, $0) }
        }
        switch scanner.scan(maximumSites: maximumSites - registerSites.count) {
        case .complete:
            break
        case .tooSparse:
            return skipped("the parent maps more pages than its memory holds (\(scanner.pagesVisited) visited); not scanned")
        case .tooManySites:
            return skipped("the parent holds more than \(maximumSites) words that look like its canary, pointer guard or mangled pointers")
        }
        let kinds = scanner.sites.map(\.kind) + registerSites.map(\.kind)
        let outcome = Outcome.rerandomised(canaryCopies: kinds.count { $0 == .canary },
                                           pointerGuardCopies: kinds.count { $0 == .pointerGuard },
                                           mangledPointers: kinds.count { if case .mangled = $0 { true } else { false } })
        return StartupRerandomisation(outcome: outcome, memorySites: scanner.sites.map { ($0.physical, $0.kind) },
                                      registerSites: registerSites, randomBytesFrame: randomBytesFrame,
                                      parentSecrets: (canary, pointerGuard), pagesSearched: scanner.scannedFrames.count)
    }

    /// Where the parent's AT_RANDOM bytes are, if they are still the bytes the engine wrote,
    /// in a page the program can write.
    private static func randomFrame(of random: (address: UInt64, bytes: [UInt8]), in space: AddressSpace) -> UInt64? {
        let count = random.bytes.count
        guard random.address % UInt64(count) == 0, space.read(random.address, count: count) == random.bytes,
              let (frame, permissions) = space.tables.translate(AddressSpace.pageDown(random.address)),
              permissions.contains(.write) else { return nil }
        return frame + random.address % AddressSpace.pageSize
    }

    /// The search of a parent's memory.
    private struct Scanner {
        let space: AddressSpace
        let holes: [Range<Int>]
        let canary: UInt64
        let pointerGuard: UInt64
        /// The parent's mapped ranges, sorted (for "does this pointer land in mapped memory").
        let regions: [(start: UInt64, end: UInt64)]
        var sites: [(virtual: UInt64, physical: UInt64, kind: Kind)] = []
        var pagesVisited = 0
        /// The frames searched (each once, however many pages map it).
        var scannedFrames = Set<UInt64>()

        init(space: AddressSpace, holes: [Range<Int>], canary: UInt64, pointerGuard: UInt64) {
            self.space = space
            self.holes = holes
            self.canary = canary
            self.pointerGuard = pointerGuard
            regions = space.regions
        }

        /// What `word` holds, if it is the canary, the guard or a mangled pointer.
        func classify(_ word: UInt64) -> Kind? {
            if word == canary { return .canary }
            if word == pointerGuard { return .pointerGuard }
            let pointer = GlibcTCB.demangle(word, key: pointerGuard)
            return pointer == 0 || isMapped(pointer) ? .mangled(pointer) : nil
        }

        func isMapped(_ address: UInt64) -> Bool {
            var low = 0, high = regions.count
            while low < high {
                let middle = (low + high) / 2
                if regions[middle].end <= address { low = middle + 1 } else { high = middle }
            }
            return low < regions.count && regions[low].start <= address
        }

        /// Whether guest-physical `frame` lies in a hole of the parent's memfd (a frame it
        /// never wrote: zeros, and reading it through the parent's shared mapping would
        /// allocate it in the memfd).
        func isHole(_ frame: UInt64) -> Bool {
            var low = 0, high = holes.count
            while low < high {
                let middle = (low + high) / 2
                if UInt64(holes[middle].upperBound) <= frame { low = middle + 1 } else { high = middle }
            }
            return low < holes.count && UInt64(holes[low].lowerBound) <= frame
        }

        enum Result { case complete, tooSparse, tooManySites }

        /// Scans every mapped page but pure code. Stops early, with the sites found so far,
        /// when the parent's mappings hold more pages than its memory has frames (a hostile
        /// page table), or more than `maximumSites` places turn up (each costs the engine
        /// memory here and every child a write).
        mutating func scan(maximumSites: Int) -> Result {
            let budget = space.memory.size / GuestMemory.pageSize
            scannedFrames.removeAll()
            for region in regions {
                var page = region.start
                while page < region.end {
                    defer { page += AddressSpace.pageSize }
                    pagesVisited += 1
                    guard pagesVisited <= budget else { return .tooSparse }
                    guard let (frame, permissions) = space.tables.translate(page), permissions.contains(.user),
                          permissions.contains(.write) || !permissions.contains(.execute),
                          !isHole(frame), scannedFrames.insert(frame).inserted,
                          let base = space.memory.pointer(physical: frame, length: GuestMemory.pageSize) else { continue }
                    // unsafe: `pointer` checked the whole frame lies inside guest memory, which is
                    // page-aligned, so the frame holds 512 aligned words; the parent is frozen.
                    let words = UnsafeBufferPointer(start: base.assumingMemoryBound(to: UInt64.self), count: GuestMemory.pageSize / GlibcTCB.wordBytes)
                    for (index, word) in words.enumerated() {
                        guard let kind = classify(word) else { continue }
                        let offset = UInt64(index * GlibcTCB.wordBytes)
                        sites.append((page + offset, frame + offset, kind))
                        if sites.count > maximumSites { return .tooManySites }
                    }
                }
            }
            addJumpBufferFramePointers()
            return sites.count > maximumSites ? .tooManySites : .complete
        }

        /// glibc mangles a jmp_buf's RBP whatever it holds (often not a pointer at all): for
        /// each RSP and PC pair found mangled — the stack pointer into writable memory, the PC
        /// into executable memory — the word six before the PC is taken as mangled too.
        mutating func addJumpBufferFramePointers() {
            typealias Buffer = GlibcTCB.JumpBuffer
            let rspBeforePC = UInt64((Buffer.pcIndex - Buffer.rspIndex) * GlibcTCB.wordBytes)
            let rbpBeforePC = UInt64((Buffer.pcIndex - Buffer.rbpIndex) * GlibcTCB.wordBytes)
            let known = Dictionary(sites.map { ($0.virtual, $0.kind) }, uniquingKeysWith: { first, _ in first })
            for site in sites {
                guard case .mangled(let pc) = site.kind, site.virtual >= rbpBeforePC,
                      space.permissions(at: pc)?.contains(.execute) == true,
                      case .mangled(let stack)? = known[site.virtual - rspBeforePC],
                      space.permissions(at: stack)?.contains(.write) == true else { continue }
                let rbpAddress = site.virtual - rbpBeforePC
                guard known[rbpAddress] == nil, let word = space.readValue(rbpAddress, as: UInt64.self),
                      let (frame, permissions) = space.tables.translate(AddressSpace.pageDown(rbpAddress)),
                      permissions.contains(.write), !isHole(frame) else { continue }
                sites.append((rbpAddress, frame + rbpAddress % AddressSpace.pageSize,
                              .mangled(GlibcTCB.demangle(word, key: pointerGuard))))
            }
        }
    }
}
