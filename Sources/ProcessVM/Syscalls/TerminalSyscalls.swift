/// ioctl(2) on a container's terminal (`GuestTerminal`): the requests Linux's tty layer and
/// N_TTY answer that programs use (busybox sh's job control, stty, isatty, the window size),
/// from the terminal's own state. Each argument is checked: a pointer must cover the whole
/// structure (EFAULT), a structure the guest passes in is copied out of its memory once and
/// only the copy is used, and integers are range-checked (EINVAL).
extension ProcessVM {
    /// Request numbers (include/uapi/asm-generic/ioctls.h).
    enum TerminalRequest {
        static let getSettings: UInt32 = 0x5401 // TCGETS
        static let setSettings: UInt32 = 0x5402 // TCSETS
        static let setSettingsDrained: UInt32 = 0x5403 // TCSETSW
        static let setSettingsFlushed: UInt32 = 0x5404 // TCSETSF
        static let getSettings2: UInt32 = 0x802C_542A // TCGETS2
        static let setSettings2: UInt32 = 0x402C_542B // TCSETS2
        static let setSettingsDrained2: UInt32 = 0x402C_542C // TCSETSW2
        static let setSettingsFlushed2: UInt32 = 0x402C_542D // TCSETSF2
        static let sendBreak: UInt32 = 0x5409 // TCSBRK
        static let flowControl: UInt32 = 0x540A // TCXONC
        static let flush: UInt32 = 0x540B // TCFLSH
        static let makeControlling: UInt32 = 0x540E // TIOCSCTTY
        static let getForegroundGroup: UInt32 = 0x540F // TIOCGPGRP
        static let setForegroundGroup: UInt32 = 0x5410 // TIOCSPGRP
        static let outputQueued: UInt32 = 0x5411 // TIOCOUTQ
        static let getWindowSize: UInt32 = 0x5413 // TIOCGWINSZ
        static let setWindowSize: UInt32 = 0x5414 // TIOCSWINSZ
        static let inputQueued: UInt32 = 0x541B // FIONREAD, TIOCINQ
        static let dropControlling: UInt32 = 0x5422 // TIOCNOTTY
        static let sendBreakPosix: UInt32 = 0x5425 // TCSBRKP
        static let getSession: UInt32 = 0x5429 // TIOCGSID
    }

    /// struct winsize: rows, columns, and two pixel sizes, each an unsigned short.
    static let windowSizeBytes = 8

    /// Serves `request` on `terminal` with argument `c.a2`; ENOTTY for a request a terminal
    /// does not know (a slave's TIOCGPTN among them, as on Linux).
    func terminalIoctl(_ terminal: GuestTerminal, request: UInt32, _ c: SystemCall) -> SyscallOutcome {
        let argument = c.a2
        switch request {
        case TerminalRequest.getSettings, TerminalRequest.getSettings2:
            return put(terminal.settings.bytes(withSpeeds: request == TerminalRequest.getSettings2), at: argument)
        case TerminalRequest.setSettings, TerminalRequest.setSettingsDrained, TerminalRequest.setSettingsFlushed,
             TerminalRequest.setSettings2, TerminalRequest.setSettingsDrained2, TerminalRequest.setSettingsFlushed2:
            let withSpeeds = request >= TerminalRequest.setSettings2
            guard let bytes = space.read(argument, count: withSpeeds ? TerminalSettings.sizeWithSpeeds : TerminalSettings.size) else {
                return .error(.EFAULT)
            }
            let flushing = request == TerminalRequest.setSettingsFlushed || request == TerminalRequest.setSettingsFlushed2
            terminal.apply(TerminalSettings(bytes: bytes), flushingInput: flushing)
            return .success
        case TerminalRequest.getWindowSize:
            let window = terminal.window
            return put(Self.windowSizeBytes(rows: window.rows, columns: window.columns), at: argument)
        case TerminalRequest.setWindowSize:
            guard let bytes = space.read(argument, count: Self.windowSizeBytes) else { return .error(.EFAULT) }
            terminal.resize(to: GuestTerminal.WindowSize(rows: UInt16(bytes[0]) | UInt16(bytes[1]) << 8, columns: UInt16(bytes[2]) | UInt16(bytes[3]) << 8))
            return .success
        case TerminalRequest.getForegroundGroup:
            return put(terminal.foregroundGroup.littleEndianBytes, at: argument)
        case TerminalRequest.setForegroundGroup:
            guard let group = space.readValue(argument, as: Int32.self) else { return .error(.EFAULT) }
            guard group > 0 else { return .error(.EINVAL) }
            guard tree.groupExists(group, inSessionOf: identity.pid) else { return .error(.EPERM) }
            terminal.setForegroundGroup(group)
            return .success
        case TerminalRequest.getSession:
            return put((tree.session(of: tree.rootPid) ?? tree.rootPid).littleEndianBytes, at: argument)
        case TerminalRequest.inputQueued:
            return put(Int32(clamping: terminal.readableCount).littleEndianBytes, at: argument)
        case TerminalRequest.outputQueued:
            // Output is in the log as soon as it is written: nothing waits.
            return put(Int32(0).littleEndianBytes, at: argument)
        case TerminalRequest.flush:
            // TCIFLUSH, TCOFLUSH, TCIOFLUSH.
            guard argument <= 2 else { return .error(.EINVAL) }
            if argument != 1 { terminal.flushInput() }
            return .success
        case TerminalRequest.flowControl:
            // TCOOFF, TCOON, TCIOFF, TCION: output never stops here.
            return argument <= 3 ? .success : .error(.EINVAL)
        case TerminalRequest.sendBreak, TerminalRequest.sendBreakPosix, TerminalRequest.makeControlling, TerminalRequest.dropControlling:
            // The terminal is every process's controlling terminal already; a break does nothing.
            return .success
        default:
            return .error(.ENOTTY)
        }
    }

    private func put(_ bytes: [UInt8], at address: UInt64) -> SyscallOutcome {
        space.write(address, bytes) ? .success : .error(.EFAULT)
    }

    static func windowSizeBytes(rows: UInt16, columns: UInt16) -> [UInt8] {
        [UInt8(truncatingIfNeeded: rows), UInt8(truncatingIfNeeded: rows >> 8),
         UInt8(truncatingIfNeeded: columns), UInt8(truncatingIfNeeded: columns >> 8), 0, 0, 0, 0]
    }
}
