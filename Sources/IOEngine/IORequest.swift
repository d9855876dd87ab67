/// A file registered with an engine's ring: requests name it by its slot in the ring's
/// file table, which spares the kernel a descriptor lookup per request.
public struct RegisteredFile: Sendable, Hashable {
    public let slot: UInt32
}

/// What one request asks the kernel to do.
public enum IOOperation: Sendable, Equatable {
    case read
    case write
    /// fdatasync: the file's data, and the metadata needed to read it back, reach the device.
    case fdatasync
}

/// One request of a batch: `length` bytes at `offset` of `file`, into or out of the memory at
/// `address`. The memory must stay valid until the batch completes; the submitter awaits
/// the batch, which is what keeps it alive.
public struct IORequest: Sendable, Equatable {
    public let operation: IOOperation
    public let file: RegisteredFile
    /// The buffer's address as a bit pattern, so that requests can cross to the I/O thread.
    public let address: UInt
    public let length: Int
    public let offset: UInt64

    public static func read(_ file: RegisteredFile, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) -> IORequest {
        IORequest(operation: .read, file: file, address: UInt(bitPattern: buffer.baseAddress), length: buffer.count, offset: offset)
    }

    public static func write(_ file: RegisteredFile, from buffer: UnsafeRawBufferPointer, at offset: UInt64) -> IORequest {
        IORequest(operation: .write, file: file, address: UInt(bitPattern: buffer.baseAddress), length: buffer.count, offset: offset)
    }

    public static func fdatasync(_ file: RegisteredFile) -> IORequest {
        IORequest(operation: .fdatasync, file: file, address: 0, length: 0, offset: 0)
    }

    /// This request followed by `next`, as one request, when `next` continues it: the same
    /// operation on the same file, at the next bytes of both the file and the memory.
    public func extended(by next: IORequest) -> IORequest? {
        guard operation == next.operation, operation != .fdatasync, file == next.file,
              offset + UInt64(length) == next.offset, address + UInt(length) == next.address else { return nil }
        return IORequest(operation: operation, file: file, address: address, length: length + next.length, offset: offset)
    }

    /// Names the request in error messages.
    var label: String {
        switch operation {
        case .read: return "read(file slot \(file.slot), \(length) bytes at \(offset))"
        case .write: return "write(file slot \(file.slot), \(length) bytes at \(offset))"
        case .fdatasync: return "fdatasync(file slot \(file.slot))"
        }
    }
}
