/// prctl(PR_GET_NAME) answered in the program, with no exit: busybox asks for its name at the
/// start of every applet (`busybox echo`'s first call), and the answer is 16 bytes the engine
/// already knows. The stub sends prctl here; with PR_GET_NAME the routine copies the name the
/// engine keeps in the process's mailbox page (`SystemArea.programNameWords`) to the program's
/// buffer with two 8-byte stores and returns 0; any other option goes back to the stub, which
/// serves it as before (PR_SET_NAME changes the words). It uses no scratch memory, so threads
/// may run it at once; a store that faults is answered EFAULT
/// (`ProcessVM.answerFaultInGuestRoutine`), as the engine answers it.
enum ProgramNameRoutine {
    static let address: UInt64 = SystemArea.stubPage + 0x800
    static let getName: UInt8 = 16

    static func assemble(returnTarget: UInt64, slowTarget: UInt64) -> (code: [UInt8], storeOffsets: [Int]) {
        func abs32(_ value: UInt64) -> [UInt8] { UInt32(value).littleEndianBytes }
        func rel32(from end: Int, to target: UInt64) -> [UInt8] { Int32(Int(target) - Int(address) - end).littleEndianBytes }
        var code: [UInt8] = [0x48, 0x83, 0xFF, getName] // cmp rdi, PR_GET_NAME
        code += [0x75, 0x00] // jne slow (patched below)
        let jumpAt = code.count - 1
        code += [0x48, 0x8B, 0x04, 0x25] + abs32(SystemArea.programNameWords) // mov rax, [name]
        let firstStore = code.count
        code += [0x48, 0x89, 0x06] // mov [rsi], rax
        code += [0x48, 0x8B, 0x04, 0x25] + abs32(SystemArea.programNameWords + 8) // mov rax, [name + 8]
        let secondStore = code.count
        code += [0x48, 0x89, 0x46, 0x08] // mov [rsi + 8], rax
        code += [0x31, 0xC0] // xor eax, eax
        code += [0xE9]
        code += rel32(from: code.count + 4, to: returnTarget) // jmp the stub's return
        code[jumpAt] = UInt8(code.count - (jumpAt + 1)) // slow:
        code += [0xB8] + UInt32(157).littleEndianBytes // mov eax, SYS_prctl
        code += [0xE9]
        code += rel32(from: code.count + 4, to: slowTarget) // jmp back into the stub
        return (code, [firstStore, secondStore])
    }
}
