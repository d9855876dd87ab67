/// Linux's struct termios as the terminal ioctls pass it (the kernel's layout, not Glibc's
/// larger one): four flag words, the line discipline and 19 control characters, 36 bytes;
/// termios2 (TCGETS2, TCSETS2) adds the input and output speeds, 44 bytes.
struct TerminalSettings: Equatable {
    static let size = 4 * MemoryLayout<UInt32>.size + 1 + controlCharacterCount
    static let sizeWithSpeeds = size + 2 * MemoryLayout<UInt32>.size
    static let controlCharacterCount = 19
    /// The speed Linux gives a pseudo-terminal (B38400), in baud, for termios2.
    static let defaultSpeed: UInt32 = 38400

    var inputFlags: UInt32
    var outputFlags: UInt32
    var controlFlags: UInt32
    var localFlags: UInt32
    var controlCharacters: [UInt8]

    /// What a new Linux pseudo-terminal's slave starts with (tty_std_termios, with the pty
    /// driver's c_cflag): ICRNL|IXON, OPOST|ONLCR, B38400|CS8|CREAD,
    /// ISIG|ICANON|ECHO|ECHOE|ECHOK|ECHOCTL|ECHOKE|IEXTEN, and INIT_C_CC's characters.
    static let linuxDefault = TerminalSettings(
        inputFlags: InputFlag.icrnl | InputFlag.ixon,
        outputFlags: OutputFlag.opost | OutputFlag.onlcr,
        controlFlags: ControlFlag.b38400 | ControlFlag.cs8 | ControlFlag.cread,
        localFlags: LocalFlag.isig | LocalFlag.icanon | LocalFlag.echo | LocalFlag.echoe | LocalFlag.echok
            | LocalFlag.echoctl | LocalFlag.echoke | LocalFlag.iexten,
        controlCharacters: [0x03, 0x1C, 0x7F, 0x15, 0x04, 0, 1, 0, 0x11, 0x13, 0x1A, 0, 0x12, 0x0F, 0x17, 0x16, 0, 0, 0])

    /// Reads the kernel layout from `bytes` (at least `size` long: the caller copied them out
    /// of guest memory once). The line discipline byte is ignored, as Linux's TCSETS does:
    /// the terminal keeps N_TTY.
    init(bytes: [UInt8]) {
        precondition(bytes.count >= Self.size, "a termios is \(Self.size) bytes")
        func word(_ index: Int) -> UInt32 {
            (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[index * 4 + $1]) << (8 * $1) }
        }
        inputFlags = word(0)
        outputFlags = word(1)
        controlFlags = word(2)
        localFlags = word(3)
        controlCharacters = Array(bytes[(Self.size - Self.controlCharacterCount)..<Self.size])
    }

    init(inputFlags: UInt32, outputFlags: UInt32, controlFlags: UInt32, localFlags: UInt32, controlCharacters: [UInt8]) {
        self.inputFlags = inputFlags
        self.outputFlags = outputFlags
        self.controlFlags = controlFlags
        self.localFlags = localFlags
        self.controlCharacters = controlCharacters
    }

    /// The kernel layout (`size` bytes, or `sizeWithSpeeds` with the speeds appended).
    func bytes(withSpeeds: Bool = false) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Self.sizeWithSpeeds)
        for word in [inputFlags, outputFlags, controlFlags, localFlags] { bytes += word.littleEndianBytes }
        bytes.append(0) // c_line: N_TTY
        bytes += controlCharacters
        if withSpeeds { bytes += Self.defaultSpeed.littleEndianBytes + Self.defaultSpeed.littleEndianBytes }
        return bytes
    }

    /// The control character at `index` (a `ControlCharacter`), nil when disabled (0, Linux's
    /// _POSIX_VDISABLE).
    func character(_ index: Int) -> UInt8? {
        let value = controlCharacters[index]
        return value == 0 ? nil : value
    }

    func has(local flag: UInt32) -> Bool { localFlags & flag != 0 }
    func has(input flag: UInt32) -> Bool { inputFlags & flag != 0 }
    func has(output flag: UInt32) -> Bool { outputFlags & flag != 0 }
}

/// c_iflag bits (include/uapi/asm-generic/termbits.h).
enum InputFlag {
    static let istrip: UInt32 = 0o40
    static let inlcr: UInt32 = 0o100
    static let igncr: UInt32 = 0o200
    static let icrnl: UInt32 = 0o400
    static let ixon: UInt32 = 0o2000
}

/// c_oflag bits.
enum OutputFlag {
    static let opost: UInt32 = 0o1
    static let onlcr: UInt32 = 0o4
    static let ocrnl: UInt32 = 0o10
}

/// c_cflag bits.
enum ControlFlag {
    static let b38400: UInt32 = 0o17
    static let cs8: UInt32 = 0o60
    static let cread: UInt32 = 0o200
}

/// c_lflag bits.
enum LocalFlag {
    static let isig: UInt32 = 0o1
    static let icanon: UInt32 = 0o2
    static let echo: UInt32 = 0o10
    static let echoe: UInt32 = 0o20
    static let echok: UInt32 = 0o40
    static let echonl: UInt32 = 0o100
    static let noflsh: UInt32 = 0o200
    static let echoctl: UInt32 = 0o1000
    static let echoke: UInt32 = 0o4000
    static let iexten: UInt32 = 0o100000
}

/// Indexes into c_cc.
enum ControlCharacter {
    static let interrupt = 0, quit = 1, erase = 2, kill = 3, endOfFile = 4, time = 5, minimum = 6
    static let suspend = 10, endOfLine = 11, wordErase = 14, endOfLine2 = 16
}
