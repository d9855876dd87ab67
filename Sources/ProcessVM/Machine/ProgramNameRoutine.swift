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
        var a = StubAssembler(origin: Int(address - SystemArea.stubPage))
        a.labels["return"] = Int(returnTarget - SystemArea.stubPage)
        a.labels["afterPrctl"] = Int(slowTarget - SystemArea.stubPage)
        func abs32(_ value: UInt64) -> [UInt8] { UInt32(value).littleEndianBytes }
        a.emit([0x48, 0x83, 0xFF, getName]) // cmp rdi, PR_GET_NAME
        a.jump(.notEqual, to: "slow")
        a.emit([0x48, 0x8B, 0x04, 0x25] + abs32(SystemArea.programNameWords)) // mov rax, [name]
        let firstStore = a.bytes.count
        a.emit([0x48, 0x89, 0x06]) // mov [rsi], rax
        a.emit([0x48, 0x8B, 0x04, 0x25] + abs32(SystemArea.programNameWords + 8)) // mov rax, [name + 8]
        let secondStore = a.bytes.count
        a.emit([0x48, 0x89, 0x46, 0x08]) // mov [rsi + 8], rax
        a.emit([0x31, 0xC0]) // xor eax, eax
        a.jump(.always, to: "return")
        a.label("slow")
        a.emit([0xB8] + UInt32(157).littleEndianBytes) // mov eax, SYS_prctl
        a.jump(.always, to: "afterPrctl")
        return (a.finish(), [firstStore, secondStore])
    }
}
