/// Who the program is told it is: the engine's answers to getpid, getuid, uname and friends.
/// A fork child gets its own.
public struct GuestIdentity: Sendable, Equatable {
    public var pid: Int32
    public var parentPid: Int32
    public var uid: UInt32
    public var gid: UInt32
    public var hostname: String

    public init(pid: Int32 = 1, parentPid: Int32 = 0, uid: UInt32 = 0, gid: UInt32 = 0, hostname: String = "vmfork") {
        self.pid = pid
        self.parentPid = parentPid
        self.uid = uid
        self.gid = gid
        self.hostname = hostname
    }
}

/// How a container's program ended.
public enum ExitStatus: Equatable, Sendable, CustomStringConvertible {
    case exited(Int32)
    /// Ended by a signal (a fault, or a kill), as Linux reports it.
    case signaled(Int32)

    /// The shell's view: the exit code, or 128 + signal.
    public var code: Int32 {
        switch self {
        case .exited(let code): return code & 0xFF
        case .signaled(let signal): return 128 + signal
        }
    }

    public var description: String {
        switch self {
        case .exited(let code): return "exited with \(code)"
        case .signaled(let signal): return "killed by signal \(signal)"
        }
    }
}

/// A fault that ended the program, for the diagnostic printed with its exit status.
public struct GuestFault: Sendable, Equatable, CustomStringConvertible {
    public let signal: Int32
    public let vector: UInt8
    public let instructionPointer: UInt64
    /// The faulting address for page faults (CR2), else 0.
    public let address: UInt64
    public let errorCode: UInt64

    static let names: [UInt8: String] = [
        0: "divide error", 1: "debug", 3: "breakpoint", 4: "overflow", 5: "bound range", 6: "invalid opcode",
        7: "device not available", 8: "double fault", 13: "general protection fault", 14: "page fault",
        16: "x87 floating-point error", 17: "alignment check", 19: "SIMD floating-point error",
    ]

    /// The signal Linux sends a user program for an exception vector.
    static func signal(forVector vector: UInt8) -> Int32 {
        switch vector {
        case 0, 16, 19: return 8 // SIGFPE
        case 1, 3: return 5 // SIGTRAP
        case 6: return 4 // SIGILL
        case 17: return 7 // SIGBUS
        default: return 11 // SIGSEGV
        }
    }

    public var description: String {
        let name = Self.names[vector] ?? "exception \(vector)"
        let at = vector == 14 ? String(format: " accessing 0x%llx", address) : ""
        return String(format: "%@ at rip 0x%llx%@ (error code 0x%llx)", name, instructionPointer, at, errorCode)
    }
}

import Foundation
