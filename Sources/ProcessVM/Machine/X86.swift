/// Architectural constants of x86-64 that the engine programs into a process VM.
enum X86 {
    enum CR0 {
        static let protectedMode: UInt64 = 1 << 0
        static let monitorCoprocessor: UInt64 = 1 << 1
        static let extensionType: UInt64 = 1 << 4
        static let numericError: UInt64 = 1 << 5
        static let writeProtect: UInt64 = 1 << 16
        static let paging: UInt64 = 1 << 31
    }

    enum CR4 {
        static let physicalAddressExtension: UInt64 = 1 << 5
        static let osFXSR: UInt64 = 1 << 9
        static let osXMMExceptions: UInt64 = 1 << 10
        static let fsGSBase: UInt64 = 1 << 16
        static let osXSAVE: UInt64 = 1 << 18
    }

    enum EFER {
        static let syscallEnable: UInt64 = 1 << 0
        static let longModeEnable: UInt64 = 1 << 8
        static let longModeActive: UInt64 = 1 << 10
        static let noExecuteEnable: UInt64 = 1 << 11
    }

    enum MSR {
        static let star: UInt32 = 0xC000_0081
        static let lstar: UInt32 = 0xC000_0082
        static let cstar: UInt32 = 0xC000_0083
        static let syscallMask: UInt32 = 0xC000_0084
        static let fsBase: UInt32 = 0xC000_0100
        static let gsBase: UInt32 = 0xC000_0101
        static let kernelGSBase: UInt32 = 0xC000_0102
    }

    /// Segment selectors, in Linux's layout so that STAR matches what SYSCALL expects.
    enum Selector {
        static let kernelCode: UInt16 = 0x10
        static let kernelData: UInt16 = 0x18
        static let userCode32: UInt16 = 0x23
        static let userData: UInt16 = 0x2B
        static let userCode: UInt16 = 0x33
        static let taskState: UInt16 = 0x40
    }

    /// RFLAGS bit 1 is reserved and always set.
    static let rflagsReserved: UInt64 = 1 << 1
    /// XCR0: x87, SSE and AVX state.
    static let xcr0X87SSEAVX: UInt64 = 0b111

    /// #BP, raised by `int3` (0xCC), with the address after it in the frame.
    static let breakpointVector: UInt8 = 3
    static let int3: UInt8 = 0xCC

    /// Exceptions that push an error code on the stack.
    static let vectorsWithErrorCode: Set<UInt8> = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30]
}

extension FixedWidthInteger {
    // unsafe: reads only the integer's MemoryLayout<Self>.size bytes, copied into an array before the closure returns.
    /// The value's bytes, least significant first: machine code's immediates and
    /// displacements, and the structures the engine writes for a guest.
    var littleEndianBytes: [UInt8] { withUnsafeBytes(of: littleEndian) { Array($0) } }
}
