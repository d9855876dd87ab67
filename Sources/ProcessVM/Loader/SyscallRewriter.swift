#if canImport(Glibc)
import Glibc
#endif

/// Rewrites a loaded program's `mov eax, N; syscall` pairs so that its system calls reach the
/// engine's stub without PVM's SYSCALL switch.
///
/// Under PVM a `syscall` instruction is a switch to the guest's (emulated) supervisor mode,
/// which costs about what a VM exit costs (each toggles CPUID faulting, intercepted by the
/// outer hypervisor): a call served by exit costs two exits, a polled call one. A rewritten
/// call never leaves user mode on its way in: the `mov eax, N` (5 bytes) becomes a `jmp` to a
/// thunk of the site's own, which loads N, the return address and the flags as SYSCALL would
/// (RCX, R11) and jumps to the stub's entry. The stub serves it as any call (polled, or by
/// its `out`) and returns with `iretq`, which user mode may execute to return to user mode.
/// So a call by exit costs one exit, and a polled call none. The identity calls (getpid,
/// getuid, getgid, geteuid, getegid) do not even enter the stub: their thunk reads the answer
/// from the words the engine keeps in the process's mailbox page (`SystemArea.identityWords`),
/// as a vDSO would, and returns; no exit either way.
///
/// What is rewritten, and why it is safe:
/// - The pair `B8 imm32 0F 05` (mov eax, imm32; syscall) with an immediate below
///   `numberLimit`, found in the image's executable segments; glibc's wrappers are this pair
///   (240 of static busybox's 284 `syscall`s). And the register form `89 /r 0F 05 48 3D
///   00 F0 FF FF` (mov eax, r32; syscall; cmp rax, -4096: glibc's `_exit`, every program's
///   last call), replaced whole, only where no direct branch in the code lands inside it
///   (`unbranched`). Other calls keep the SYSCALL path.
/// - A pair's `syscall` instruction stays in place: code that jumps straight to it (with EAX
///   set elsewhere) still makes the call the slow way. Only the `mov` changes; a jump into the
///   middle of a real `mov` cannot exist in valid code. A register site's `syscall` and `cmp`
///   go (its two-byte `mov` cannot hold a jump): the thunk returns to a copy of the `cmp`,
///   which jumps back past the site; a site any direct branch lands inside is left alone, and
///   the engine never rewinds a call's RIP onto its `syscall`.
/// - x86 cannot be decoded backwards, so a `B8` could be the tail of another instruction. A
///   byte before it that could prefix it (REX, operand or address size, segment, lock, rep,
///   the two-byte escape, VEX) refuses the site. Beyond that, bytes `B8 N 00 00 00` before a
///   `syscall` that are not that `mov` decode as an instruction writing `[rax]` (`00 00` is
///   `add [rax], al`) just before the call, which no compiler emits there.
/// - Nothing of the program's stack changes: the thunk's flags go below the 128-byte red zone,
///   as the stub's iretq frame already does. RCX and R11 are clobbered, as `syscall` does.
/// - The thunks sit in pages of their own, within a `jmp rel32` of every site, mapped user
///   read-execute: right below a loaded image, or where mmap would put a mapping of their size
///   for a library the program maps. They are the program's memory: a program that
///   writes or unmaps them only breaks itself, as it could by writing its own code.
/// - It runs in the loader, before the program's first instruction, or in the program's own
///   mmap of a library, on pages just filled: no vCPU can be executing the bytes it changes.
///   A warm parent's children inherit the rewritten code, shared.
enum SyscallRewriter {
    /// A site: the address of its `mov eax, number`, the `syscall` right after; or, where
    /// `numberRegister` is set, of a `mov eax, r32` (its ModRM byte) with the `syscall` and
    /// glibc's error check `cmp rax, -4096` after it (`registerSiteLength` bytes in all).
    struct Site: Equatable {
        let address: UInt64
        let number: UInt32
        var numberRegister: UInt8? = nil
        var length: UInt64 { numberRegister == nil ? siteLength : registerSiteLength }
    }

    static let movEAX: UInt8 = 0xB8
    static let syscallOpcode: (UInt8, UInt8) = (0x0F, 0x05)
    /// mov eax, imm32 (5 bytes) and syscall (2).
    static let movLength: UInt64 = 5
    static let siteLength: UInt64 = 7
    /// An immediate this large is no x86-64 system-call number (the table ends below 512).
    static let numberLimit: UInt32 = 512
    /// Each site's thunk: mov eax, N (5); lea rcx, [rip + to the site's end] (7); jmp common (5).
    static let thunkLength: UInt64 = 17
    /// glibc's `_exit` (every program's last call) and a few other wrappers take the number
    /// from a register: `mov eax, r32` (89 /r: 2 bytes), `syscall`, then the wrapper's error
    /// check, `cmp rax, -4096` (48 3D imm32) — ten bytes, the only form long enough for the
    /// jump. These three instructions are replaced whole (a jump, then int3s); the thunk
    /// moves the number, enters the stub with its return address at a copy of the `cmp`, which
    /// jumps back past the site, flags set as the original left them.
    static let registerSiteLength: UInt64 = 10
    static let errorCheck: [UInt8] = [0x48, 0x3D, 0x00, 0xF0, 0xFF, 0xFF]
    /// A register site's thunk: mov eax, r32 (2); lea rcx, [rip + to the copy] (7); jmp common
    /// (5); the copy: cmp rax, -4096 (6); jmp past the site (5).
    static let registerThunkLength: UInt64 = 25
    /// An identity call's: mov eax, [word] (7); lea rcx, [rip + to the site's end] (7); jmp the
    /// identity return (5).
    static let identityThunkLength: UInt64 = 19
    /// The two shared entries before the thunks, each padded to 32 bytes: into the stub, and
    /// back from an identity call.
    static let commonLength: UInt64 = 64
    static let identityReturnOffset: UInt64 = 32
    /// The calls answered from `SystemArea.identityWords`, and the offset of each one's word.
    static let identityWordOffsets: [UInt32: UInt32] = [39: 0, 102: 4, 104: 8, 107: 4, 108: 8]

    /// True when `byte`, right before a `B8`, could make it part of another instruction: a
    /// REX prefix (mov r8d-r15d, imm32), an operand- or address-size, segment, lock or rep
    /// prefix, the two-byte opcode escape (0F B8 is POPCNT/JMPE), or a VEX prefix.
    static func mayChangeTheMov(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x40...0x4F, 0x66, 0x67, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0xF0, 0xF2, 0xF3, 0x0F, 0xC4, 0xC5: return true
        default: return false
        }
    }

    /// The sites in `code`, the bytes of executable memory starting at virtual `base`, whose
    /// `syscall` ends at index `fresh` or later (a window's bytes before `fresh` were carried
    /// over from the page before, whose scan reported the sites ending there).
    static func sites(in code: UnsafeRawBufferPointer, at base: UInt64, fresh: Int = 0) -> [Site] {
        guard let start = code.baseAddress, code.count >= Int(siteLength) else { return [] }
        var found: [Site] = []
        // The shortest form has two bytes before its `syscall` (`mov eax, r32`).
        var offset = max(2, fresh - 1)
        while offset + 2 <= code.count {
            // memchr finds each 0F at memory speed (text runs to megabytes).
            guard let hit = memchr(start + offset, Int32(syscallOpcode.0), code.count - 1 - offset) else { break }
            let at = start.distance(to: UnsafeRawPointer(hit))
            offset = at + 1
            guard code[at + 1] == syscallOpcode.1 else { continue }
            if let site = registerSite(in: code, syscallAt: at, base: base) {
                found.append(site)
                continue
            }
            let mov = at - Int(movLength)
            guard mov >= 0, code[mov] == movEAX else { continue }
            let number = UInt32(code[mov + 1]) | UInt32(code[mov + 2]) << 8 | UInt32(code[mov + 3]) << 16 | UInt32(code[mov + 4]) << 24
            guard number < numberLimit else { continue }
            if mov > 0, mayChangeTheMov(code[mov - 1]) { continue }
            found.append(Site(address: base + UInt64(mov), number: number))
        }
        return found
    }

    /// The register site whose `syscall` is at `at`, if the bytes around it are that form:
    /// `89 /r` with a register source other than EAX and EAX as destination (ModRM 11 sss 000),
    /// no prefix before it (a REX would make it `mov rax, r64` or another register's), and
    /// glibc's error check right after.
    static func registerSite(in code: UnsafeRawBufferPointer, syscallAt at: Int, base: UInt64) -> Site? {
        let mov = at - 2
        guard mov >= 0, at + 2 + errorCheck.count <= code.count, code[mov] == 0x89 else { return nil }
        let modrm = code[mov + 1]
        guard modrm & 0xC7 == 0xC0, modrm != 0xC0 else { return nil }
        if mov > 0, mayChangeTheMov(code[mov - 1]) { return nil }
        for (index, byte) in errorCheck.enumerated() where code[at + 2 + index] != byte { return nil }
        return Site(address: base + UInt64(mov), number: 0, numberRegister: modrm)
    }

    /// Of `sites`, those none of whose bytes but the first is the target of a direct jump or
    /// call anywhere in `code` (read as `sites(in:of:)` does). A register site's `syscall` and
    /// `cmp` are replaced too, so code that jumped to them would run int3s; every byte is
    /// taken as a possible branch opcode, so data that looks like one only keeps a site on the
    /// SYSCALL path.
    static func unbranched(_ sites: [Site], in code: [Range<UInt64>], of space: AddressSpace) -> [Site] {
        let guarded = sites.filter { $0.numberRegister != nil }
        guard !guarded.isEmpty else { return sites }
        var inside: [UInt64: UInt64] = [:]
        for site in guarded { for address in (site.address + 1)..<(site.address + site.length) { inside[address] = site.address } }
        var hit: Set<UInt64> = []
        for range in code {
            // A branch is at most 6 bytes: 5 carried let each one end in some window's fresh bytes.
            forEachWindow(of: range, in: space, carrying: 5) { buffer, origin, carried in
                func target(_ index: Int, _ length: Int, rel32: Bool) {
                    let value: Int64 = rel32
                        ? Int64(Int32(bitPattern: UInt32(buffer[index + length - 4]) | UInt32(buffer[index + length - 3]) << 8
                            | UInt32(buffer[index + length - 2]) << 16 | UInt32(buffer[index + length - 1]) << 24))
                        : Int64(Int8(bitPattern: buffer[index + length - 1]))
                    let to = (origin + UInt64(index + length)) &+ UInt64(bitPattern: value)
                    if let site = inside[to] { hit.insert(site) }
                }
                // Each opcode position once: those whose branch ends in this window's fresh
                // bytes (the carried ones were judged with the page before).
                let filled = buffer.count
                for index in 0..<filled {
                    let byte = buffer[index]
                    if byte == 0xE8 || byte == 0xE9, index + 5 <= filled, index + 5 > carried { target(index, 5, rel32: true) }
                    if byte == 0x0F, index + 6 <= filled, index + 6 > carried, (0x80...0x8F).contains(buffer[index + 1]) { target(index, 6, rel32: true) }
                    if byte == 0xEB || (0x70...0x7F).contains(byte) || (0xE0...0xE3).contains(byte), index + 2 <= filled, index + 2 > carried {
                        target(index, 2, rel32: false)
                    }
                }
            }
        }
        return sites.filter { !hit.contains($0.address) }
    }

    /// The sites in `range` of `space` (see `forEachWindow`: a site may straddle two pages).
    static func sites(in range: Range<UInt64>, of space: AddressSpace) -> [Site] {
        var found: [Site] = []
        forEachWindow(of: range, in: space, carrying: Int(siteLength)) { window, origin, carried in
            found += sites(in: window, at: origin, fresh: carried)
        }
        return found
    }

    /// Calls `body` with `range` of `space` read a page at a time into one window that first
    /// carries the last `carry` bytes of the page before (so that a pattern may straddle two
    /// pages), the window's virtual address, and how many carried bytes it begins with:
    /// scanning costs the engine a page of memory whatever the range's size.
    static func forEachWindow(of range: Range<UInt64>, in space: AddressSpace, carrying carry: Int,
                              _ body: (UnsafeRawBufferPointer, UInt64, Int) -> Void) {
        var window = [UInt8](repeating: 0, count: carry + Int(AddressSpace.pageSize))
        var carried = 0
        var address = range.lowerBound
        while address < range.upperBound {
            let chunk = Int(min(range.upperBound, AddressSpace.pageDown(address) + AddressSpace.pageSize) - address)
            // unsafe: `window` is carry + a page long; carried <= carry and chunk <= a page keep every copy inside it, and `body` sees it only for its call.
            window.withUnsafeMutableBytes { buffer in
                space.loaderCopy(address, count: chunk, into: buffer.baseAddress! + carried)
                let filled = carried + chunk
                body(UnsafeRawBufferPointer(rebasing: buffer[0..<filled]), address - UInt64(carried), carried)
                let kept = min(carry, filled)
                (buffer.baseAddress!).copyMemory(from: buffer.baseAddress! + (filled - kept), byteCount: kept)
                carried = kept
            }
            address += UInt64(chunk)
        }
    }

    /// The shared entries: the program's RFLAGS into R11 through a slot below the red zone (as
    /// SYSCALL leaves them), then an absolute jump to the stub; or, back from an identity call,
    /// a jump to the return address in RCX.
    static func commonCode(stub: UInt64) -> [UInt8] {
        let flagsIntoR11: [UInt8] = [
            0x48, 0x8D, 0x64, 0x24, 0x80, // lea rsp, [rsp-128]
            0x9C, // pushfq
            0x41, 0x5B, // pop r11
            0x48, 0x8D, 0xA4, 0x24, 0x80, 0x00, 0x00, 0x00, // lea rsp, [rsp+128]
        ]
        func padded(_ code: [UInt8]) -> [UInt8] { code + [UInt8](repeating: 0xCC, count: Int(identityReturnOffset) - code.count) }
        let intoStub = flagsIntoR11 + [0xFF, 0x25, 0x00, 0x00, 0x00, 0x00] + stub.littleEndianBytes // jmp [rip+0]
        let identityReturn = flagsIntoR11 + [0xFF, 0xE1] // jmp rcx
        return padded(intoStub) + padded(identityReturn)
    }

    /// The thunk at `thunk` for `site`, whose shared entries start at `common`; nil when a
    /// displacement does not fit in 32 bits.
    static func thunkCode(for site: Site, at thunk: UInt64, common: UInt64) -> [UInt8]? {
        if let modrm = site.numberRegister {
            guard let toCopy = displacement(from: thunk + 9, to: thunk + 14),
                  let toCommon = displacement(from: thunk + 14, to: common),
                  let back = displacement(from: thunk + registerThunkLength, to: site.address + registerSiteLength) else { return nil }
            return [0x89, modrm] + [0x48, 0x8D, 0x0D] + toCopy.littleEndianBytes + [0xE9] + toCommon.littleEndianBytes
                + errorCheck + [0xE9] + back.littleEndianBytes
        }
        if let word = identityWordOffsets[site.number] {
            let load: [UInt8] = [0x8B, 0x04, 0x25] + (UInt32(SystemArea.identityWords) + word).littleEndianBytes // mov eax, [word]
            guard let back = displacement(from: thunk + 14, to: site.address + siteLength),
                  let toReturn = displacement(from: thunk + identityThunkLength, to: common + identityReturnOffset) else { return nil }
            return load + [0x48, 0x8D, 0x0D] + back.littleEndianBytes + [0xE9] + toReturn.littleEndianBytes
        }
        guard let back = displacement(from: thunk + 12, to: site.address + siteLength),
              let toCommon = displacement(from: thunk + thunkLength, to: common) else { return nil }
        return [movEAX] + site.number.littleEndianBytes + [0x48, 0x8D, 0x0D] + back.littleEndianBytes + [0xE9] + toCommon.littleEndianBytes
    }

    /// The bytes that replace a site's `mov`: jmp rel32 to its thunk; nil out of reach.
    static func jumpCode(for site: Site, to thunk: UInt64) -> [UInt8]? {
        guard let jump = displacement(from: site.address + movLength, to: thunk).map({ [0xE9] + $0.littleEndianBytes }) else { return nil }
        return site.numberRegister == nil ? jump : jump + [UInt8](repeating: 0xCC, count: Int(registerSiteLength - movLength))
    }

    /// `to - from` as a rel32, when it fits.
    static func displacement(from: UInt64, to: UInt64) -> Int32? {
        Int32(exactly: Int64(bitPattern: to &- from))
    }

    /// Rewrites the sites of the executable segments of an image just loaded at `bias` into
    /// `space`, with its thunks in fresh pages right below the image. Returns how many sites
    /// were rewritten (0 when there is no room for the thunks or no site).
    static func rewrite(_ image: ELFImage, bias: UInt64, in space: AddressSpace) throws(GuestError) -> Int {
        let code = image.segments.filter { $0.permissions.contains(.execute) && $0.fileSize > 0 }
            .map { ($0.virtualAddress + bias)..<($0.virtualAddress + bias + UInt64($0.fileSize)) }
        guard let lowest = image.segments.map({ $0.virtualAddress + bias }).min() else { return 0 }
        let imageStart = AddressSpace.pageDown(lowest)
        return try rewrite(code: code, in: space) { length in
            guard imageStart >= AddressSpace.userBottom + length, space.isFree(imageStart - length, imageStart) else { return nil }
            return imageStart - length
        }
    }

    /// Rewrites the sites of a file mapping the program just made executable (a library that
    /// ld.so maps), with its thunks where mmap would put a mapping of their size.
    static func rewrite(mapping: Range<UInt64>, in space: AddressSpace) throws(GuestError) -> Int {
        try rewrite(code: [mapping], in: space) { length in space.findFree(length: length) }
    }

    /// Rewrites the sites in `code` (ranges of `space` just filled), with the thunks in pages
    /// mapped where `place` says for their length; sites out of a rel32's reach keep SYSCALL.
    private static func rewrite(code: [Range<UInt64>], in space: AddressSpace, place: (UInt64) -> UInt64?) throws(GuestError) -> Int {
        let sites = unbranched(code.flatMap { Self.sites(in: $0, of: space) }, in: code, of: space)
        guard !sites.isEmpty else { return 0 }
        let thunkBytes = sites.reduce(UInt64(0)) { total, site in
            total + (site.numberRegister != nil ? registerThunkLength : identityWordOffsets[site.number] == nil ? thunkLength : identityThunkLength)
        }
        let length = AddressSpace.pageUp(commonLength + thunkBytes)!
        guard let area = place(length) else { return 0 }
        var thunks = commonCode(stub: SystemArea.stubPage)
        var jumps: [(UInt64, [UInt8])] = []
        for site in sites {
            let thunk = area + UInt64(thunks.count)
            guard let code = thunkCode(for: site, at: thunk, common: area), let jump = jumpCode(for: site, to: thunk) else { continue }
            thunks += code
            jumps.append((site.address, jump))
        }
        guard !jumps.isEmpty else { return 0 }
        try space.mapAnonymous(at: area, length: length, [.read, .execute, .user])
        // unsafe: loaderWrite copies each array's bytes during the call, and only into guest pages it finds mapped.
        thunks.withUnsafeBytes { space.loaderWrite(area, $0) }
        for (address, jump) in jumps { jump.withUnsafeBytes { space.loaderWrite(address, $0) } }
        return jumps.count
    }
}
