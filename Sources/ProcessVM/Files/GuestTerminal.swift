import HostSystem
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A container's terminal (`docker run -t`), emulated by the engine: guest descriptors 0, 1
/// and 2 are one open file on it. The engine answers the terminal ioctls from the state here
/// (termios, window size, foreground process group), runs Linux's output processing
/// (OPOST: ONLCR, OCRNL) on what the guest writes before it reaches the container's log,
/// and runs the input side of the N_TTY line discipline on what arrives on the container's
/// standard input (ICRNL, INLCR, IGNCR; echo; canonical lines with erase, kill and end of
/// file; ISIG's characters as signals to the foreground group).
///
/// Why emulated rather than a host pseudo-terminal pair: the guest's writes then land in the
/// log synchronously, as a non-terminal container's do (complete at its exit, each noted in
/// the time index), with no copying thread per container; and no host terminal ioctl is
/// reachable from the guest (TIOCSTI, TIOCSETD, TIOCSCTTY on the engine itself), so the
/// workers' seccomp filter stays as it is.
///
/// Input is read from the host only when the guest reads and nothing is ready, so what is
/// buffered here stays small (one host read's worth, and a canonical line of at most
/// `lineLimit` bytes).
public final class GuestTerminal: Sendable {
    public struct WindowSize: Sendable, Equatable {
        public var rows: UInt16
        public var columns: UInt16
        public init(rows: UInt16, columns: UInt16) {
            self.rows = rows
            self.columns = columns
        }
        /// 24 rows of 80 columns, what the engine gives a terminal nobody sized.
        public static let standard = WindowSize(rows: 24, columns: 80)
    }

    /// Linux's canonical line limit (N_TTY_BUF_SIZE - 1): characters past it are dropped.
    static let lineLimit = 4095
    /// How much one read from the host takes.
    static let hostReadSize = 512

    struct State {
        var settings = TerminalSettings.linuxDefault
        var window: WindowSize
        /// Set by TIOCSPGRP; until then the container's first process's group.
        var foregroundGroup: Int32?
        /// What the guest may read: processed input, and in canonical mode complete lines.
        var ready: [UInt8] = []
        /// Canonical mode: the length of each line in `ready`, in order (0: end of file).
        var lineLengths: [Int] = []
        /// Canonical mode: the line being edited.
        var line: [UInt8] = []
    }

    private let state: Mutex<State>
    /// The log the terminal's output goes to (the container's stdout.log, opened O_APPEND):
    /// written whole by each call, under no lock of the engine's.
    private let output: FileDescriptor
    private let outputTimes: LogTimeIndex?
    /// The container's processes, for the signals the terminal sends (ISIG, SIGWINCH).
    private let processes = Mutex<WeakProcessTree>(WeakProcessTree())

    /// A terminal whose output goes to host descriptor `output` (duplicated here), each write
    /// noted in `outputTimes` when given.
    public init(output: Int32, outputTimes: LogTimeIndex? = nil, window: WindowSize = .standard) throws(SystemError) {
        self.output = try HostFileCalls.duplicate(output)
        self.outputTimes = outputTimes
        state = Mutex(State(window: window))
    }

    /// The window size now.
    public var window: WindowSize { state.withLock { $0.window } }

    /// Sets the window size (TIOCSWINSZ, or the client resizing); when it changed, SIGWINCH
    /// goes to the foreground process group, as Linux sends it.
    public func resize(to window: WindowSize) {
        let changed = state.withLock { state -> Bool in
            defer { state.window = window }
            return state.window != window
        }
        if changed { signalForeground(Self.windowChangedSignal) }
    }

    static let windowChangedSignal: Int32 = 28

    // MARK: - Processes

    /// Called by the container's first process VM: the terminal's signals go to its tree.
    func bind(_ tree: ProcessTree) {
        processes.withLock { $0.tree = tree }
    }

    var tree: ProcessTree? { processes.withLock { $0.tree } }

    /// The foreground process group (TIOCGPGRP): the one set, else the first process's.
    var foregroundGroup: Int32 {
        if let group = state.withLock({ $0.foregroundGroup }) { return group }
        guard let tree else { return 1 }
        return tree.processGroup(of: tree.rootPid) ?? tree.rootPid
    }

    func setForegroundGroup(_ group: Int32) {
        state.withLock { $0.foregroundGroup = group }
    }

    /// Sends `signal` to each running process of the foreground group.
    func signalForeground(_ signal: Int32) {
        guard let tree else { return }
        for target in tree.runningMembers(ofGroup: foregroundGroup) { target.sendSignal(signal) }
    }

    /// Input as it arrives from the client (attach), before it is queued for the program:
    /// with ISIG, the interrupt, quit and suspend characters act at once, as a pty's line
    /// discipline acts on arrival — echoed (as ^C), the input before them dropped unless
    /// NOFLSH, their signal sent to the foreground group — so that ^C stops a program that is
    /// not reading. Returns the rest, for the program to read.
    public func takeSignalCharacters(from input: [UInt8]) -> [UInt8] {
        let settings = self.settings
        guard settings.has(local: LocalFlag.isig) else { return input }
        func signal(for byte: UInt8) -> Int32? {
            switch byte {
            case settings.character(ControlCharacter.interrupt): 2
            case settings.character(ControlCharacter.quit): 3
            case settings.character(ControlCharacter.suspend): 20
            default: nil
            }
        }
        guard input.contains(where: { signal(for: $0) != nil }) else { return input }
        var kept: [UInt8] = []
        var echo: [UInt8] = []
        var signals: [Int32] = []
        for byte in input {
            guard let sent = signal(for: byte) else {
                kept.append(byte)
                continue
            }
            if !settings.has(local: LocalFlag.noflsh) {
                kept.removeAll()
                flushInput()
            }
            if settings.has(local: LocalFlag.echo) { Self.echoCharacter(byte, settings: settings, into: &echo) }
            signals.append(sent)
        }
        if !echo.isEmpty {
            var processed: [UInt8] = []
            Self.processOutput(echo, flags: settings.outputFlags, into: &processed)
            // The echo is best effort: a full log loses it, not the signal.
            try? append(processed)
        }
        for sent in signals { signalForeground(sent) }
        return kept
    }

    // MARK: - Settings

    var settings: TerminalSettings { state.withLock { $0.settings } }

    /// TCSETS and friends: the new settings; `flushingInput` (TCSETSF) drops unread input.
    /// Turning canonical mode off makes the line being edited readable; turning it on makes
    /// what is readable one line, as Linux's n_tty_set_termios does.
    func apply(_ settings: TerminalSettings, flushingInput: Bool) {
        state.withLock { state in
            if flushingInput { Self.flushInput(&state) }
            let wasCanonical = state.settings.has(local: LocalFlag.icanon)
            let canonical = settings.has(local: LocalFlag.icanon)
            if wasCanonical && !canonical {
                state.ready += state.line
                state.line.removeAll()
                state.lineLengths.removeAll()
            } else if !wasCanonical && canonical && !state.ready.isEmpty {
                state.lineLengths = [state.ready.count]
            }
            state.settings = settings
        }
    }

    /// TCFLSH of the input queue (and TCSETSF).
    func flushInput() { state.withLock { Self.flushInput(&$0) } }

    private static func flushInput(_ state: inout State) {
        state.ready.removeAll()
        state.lineLengths.removeAll()
        state.line.removeAll()
    }

    /// FIONREAD: the bytes readable now without reading the host.
    var readableCount: Int { state.withLock { $0.ready.count } }

    /// True when a read would find input without reading the host (poll's POLLIN).
    var hasReadyInput: Bool {
        state.withLock { $0.settings.has(local: LocalFlag.icanon) ? !$0.lineLengths.isEmpty : !$0.ready.isEmpty }
    }

    // MARK: - Output

    /// A guest write: output processing, then one append to the log. Answers the guest's
    /// bytes taken (all of them, or -errno's SystemError when the log refuses).
    func write(_ buffer: UnsafeRawBufferPointer) throws(SystemError) -> Int {
        let flags = state.withLock { $0.settings.outputFlags }
        guard flags & OutputFlag.opost != 0, flags & (OutputFlag.onlcr | OutputFlag.ocrnl) != 0,
              buffer.contains(where: { $0 == Self.newline || $0 == Self.carriageReturn }) else {
            try append(buffer)
            return buffer.count
        }
        var processed: [UInt8] = []
        processed.reserveCapacity(buffer.count + buffer.count / 8 + 1)
        Self.processOutput(buffer, flags: flags, into: &processed)
        try append(processed)
        return buffer.count
    }

    static let newline: UInt8 = 0x0A
    static let carriageReturn: UInt8 = 0x0D

    /// OPOST's mappings Linux's pseudo-terminals apply: ONLCR (\n to \r\n) and OCRNL (\r to \n).
    static func processOutput(_ bytes: some Sequence<UInt8>, flags: UInt32, into processed: inout [UInt8]) {
        guard flags & OutputFlag.opost != 0 else {
            processed += bytes
            return
        }
        for byte in bytes {
            if byte == newline, flags & OutputFlag.onlcr != 0 {
                processed += [carriageReturn, newline]
            } else if byte == carriageReturn, flags & OutputFlag.ocrnl != 0 {
                processed.append(newline)
            } else {
                processed.append(byte)
            }
        }
    }

    private func append(_ bytes: [UInt8]) throws(SystemError) {
        // unsafe: the view of `bytes` is used only inside the closure, and append reads [done, count) of it.
        try bytes.withUnsafeBytes { bytes in Result { () throws(SystemError) in try append(bytes) } }.get()
    }

    /// Appends `bytes` to the log, whole (a regular file takes a short write only when full).
    private func append(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        outputTimes?.willWrite(to: output.rawValue)
        var done = 0
        while done < bytes.count {
            let written = try retryingSyscall("write(terminal log)") { Glibc.write(output.rawValue, bytes.baseAddress! + done, bytes.count - done) }
            guard written > 0 else { throw SystemError(call: "write(terminal log)", errno: ENOSPC) }
            done += written
        }
    }

    // MARK: - Input

    /// A guest read: what is ready (in canonical mode one line at most), else what the host
    /// input `source` has, through the line discipline. EAGAIN when nothing is ready and the
    /// host has nothing yet (the caller waits on `source`); EINTR when an ISIG character
    /// arrived (its signal sent); 0 at the input's end or for an end-of-file character at a
    /// line's start.
    func read(into buffer: UnsafeMutableRawBufferPointer, from source: OpenFile) throws(SystemError) -> Int {
        var signals: [Int32] = []
        defer { for signal in signals { signalForeground(signal) } }
        return try state.withLock { state throws(SystemError) -> Int in
            while true {
                if let taken = Self.take(&state, into: buffer) { return taken }
                let settings = state.settings
                // A signal character ends the read, as the signal it sends interrupts it on Linux.
                if !signals.isEmpty { throw SystemError(call: "read(terminal)", errno: EINTR) }
                // unsafe: `chunk` is hostReadSize stack bytes used only in the closure; readHost fills at most its count, and prefix(got) stays inside.
                let attempt = withUnsafeTemporaryAllocation(byteCount: Self.hostReadSize, alignment: 1) { chunk -> Result<Int, SystemError> in
                    let got: Int
                    do throws(SystemError) {
                        got = try source.readHost(into: chunk)
                    } catch {
                        return .failure(error)
                    }
                    var echo: [UInt8] = []
                    for byte in chunk.prefix(got) { Self.receive(byte, settings: settings, state: &state, echo: &echo, signals: &signals) }
                    if !echo.isEmpty {
                        var processed: [UInt8] = []
                        Self.processOutput(echo, flags: settings.outputFlags, into: &processed)
                        // The echo is best effort: a full log loses it, not the input.
                        try? append(processed)
                    }
                    return .success(got)
                }
                let got: Int
                switch attempt {
                case .success(let count): got = count
                case .failure(let error):
                    // VMIN 0 and VTIME 0 (a polling read): at once, empty.
                    let characters = settings.controlCharacters
                    if error.errno == EAGAIN, !settings.has(local: LocalFlag.icanon),
                       characters[ControlCharacter.minimum] == 0, characters[ControlCharacter.time] == 0 { return 0 }
                    throw error
                }
                if got == 0 {
                    // The input's end: a partial line is readable, then end of file.
                    if settings.has(local: LocalFlag.icanon), !state.line.isEmpty {
                        Self.completeLine(&state)
                        continue
                    }
                    return 0
                }
            }
        }
    }

    /// What `read` takes from `ready` now; nil when nothing is ready.
    private static func take(_ state: inout State, into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        let canonical = state.settings.has(local: LocalFlag.icanon)
        let available: Int
        if canonical {
            guard let first = state.lineLengths.first else { return nil }
            if first == 0 {
                state.lineLengths.removeFirst()
                return 0
            }
            available = first
        } else {
            guard !state.ready.isEmpty else { return nil }
            available = state.ready.count
        }
        let count = min(available, buffer.count)
        guard count > 0 else { return 0 }
        // unsafe: count <= available <= ready.count (a canonical line's bytes are in `ready`) and count <= buffer.count.
        state.ready.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[..<count])) }
        state.ready.removeFirst(count)
        if canonical {
            if count == available { state.lineLengths.removeFirst() } else { state.lineLengths[0] -= count }
        }
        return count
    }

    /// One input byte through N_TTY's receive path.
    private static func receive(_ received: UInt8, settings: TerminalSettings, state: inout State, echo: inout [UInt8], signals: inout [Int32]) {
        var byte = received
        if settings.has(input: InputFlag.istrip) { byte &= 0x7F }
        if byte == carriageReturn {
            if settings.has(input: InputFlag.igncr) { return }
            if settings.has(input: InputFlag.icrnl) { byte = newline }
        } else if byte == newline, settings.has(input: InputFlag.inlcr) {
            byte = carriageReturn
        }
        let echoing = settings.has(local: LocalFlag.echo)
        if settings.has(local: LocalFlag.isig) {
            let signal: Int32? = switch byte {
            case settings.character(ControlCharacter.interrupt): 2
            case settings.character(ControlCharacter.quit): 3
            case settings.character(ControlCharacter.suspend): 20
            default: nil
            }
            if let signal {
                if !settings.has(local: LocalFlag.noflsh) { flushInput(&state) }
                if echoing { echoCharacter(byte, settings: settings, into: &echo) }
                signals.append(signal)
                return
            }
        }
        guard settings.has(local: LocalFlag.icanon) else {
            if echoing { echoCharacter(byte, settings: settings, into: &echo) }
            state.ready.append(byte)
            return
        }
        switch byte {
        case settings.character(ControlCharacter.erase):
            guard let erased = state.line.popLast() else { return }
            if echoing && settings.has(local: LocalFlag.echoe) { echo += eraseSequence(for: erased, settings: settings) }
        case settings.character(ControlCharacter.wordErase) where settings.has(local: LocalFlag.iexten):
            var erasingSpace = true
            while let last = state.line.last {
                let isSpace = last == 0x20 || last == 0x09
                if !isSpace { erasingSpace = false } else if !erasingSpace { break }
                state.line.removeLast()
                if echoing && settings.has(local: LocalFlag.echoe) { echo += eraseSequence(for: last, settings: settings) }
            }
        case settings.character(ControlCharacter.kill):
            if echoing {
                if settings.has(local: LocalFlag.echoke) {
                    for erased in state.line.reversed() { echo += eraseSequence(for: erased, settings: settings) }
                } else if settings.has(local: LocalFlag.echok) {
                    echoCharacter(byte, settings: settings, into: &echo)
                    echo.append(newline)
                }
            }
            state.line.removeAll()
        case settings.character(ControlCharacter.endOfFile):
            completeLine(&state)
        case newline, settings.character(ControlCharacter.endOfLine),
             settings.character(ControlCharacter.endOfLine2) where settings.has(local: LocalFlag.iexten):
            if echoing || byte == newline && settings.has(local: LocalFlag.echonl) { echoCharacter(byte, settings: settings, into: &echo) }
            state.line.append(byte)
            completeLine(&state)
        default:
            guard state.line.count < lineLimit else { return }
            if echoing { echoCharacter(byte, settings: settings, into: &echo) }
            state.line.append(byte)
        }
    }

    /// Moves the line being edited to the readable lines (an empty one reads as end of file).
    private static func completeLine(_ state: inout State) {
        state.ready += state.line
        state.lineLengths.append(state.line.count)
        state.line.removeAll()
    }

    /// A received character as echo shows it: with ECHOCTL a control character other than
    /// tab and newline as ^X (DEL as ^?).
    private static func echoCharacter(_ byte: UInt8, settings: TerminalSettings, into echo: inout [UInt8]) {
        if settings.has(local: LocalFlag.echoctl), isShownAsCaret(byte) {
            echo += [UInt8(ascii: "^"), byte ^ 0x40]
        } else {
            echo.append(byte)
        }
    }

    private static func isShownAsCaret(_ byte: UInt8) -> Bool {
        (byte < 0x20 && byte != 0x09 && byte != newline) || byte == 0x7F
    }

    /// Backspace, space, backspace over an erased character (twice for one shown as ^X).
    private static func eraseSequence(for erased: UInt8, settings: TerminalSettings) -> [UInt8] {
        let once: [UInt8] = [0x08, 0x20, 0x08]
        return settings.has(local: LocalFlag.echoctl) && isShownAsCaret(erased) ? once + once : once
    }
}

/// The terminal's link to the container's processes, which it must not keep alive.
struct WeakProcessTree {
    weak var tree: ProcessTree?
}
