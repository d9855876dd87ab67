import HostSystem
import IOEngine

/// Why a disk could not be opened, read, written or changed. Every case names the file and
/// the field or value that was wrong, so that the message alone says what to fix.
public enum DiskError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A header, descriptor, grain directory, grain table or marker holds a value the format
    /// does not allow.
    case malformed(file: String, field: String, problem: String)
    /// A child's parentCID does not match its parent's CID: the parent changed after the child
    /// was made, so the child's grains no longer sit on the data they were written over.
    case parentMismatch(child: String, parent: String, expectedCID: UInt32, foundCID: UInt32)
    case unsupported(file: String, feature: String)
    case outOfRange(what: String, offset: UInt64, length: UInt64, capacity: UInt64)
    case readOnly(file: String, reason: String)
    case invalidArgument(String)
    case system(SystemError)
    case io(IOUringError)

    public var description: String {
        switch self {
        case .malformed(let file, let field, let problem):
            return "\(file): malformed \(field): \(problem)"
        case .parentMismatch(let child, let parent, let expected, let found):
            return "\(child): parentCID \(hex(expected)) does not match the CID \(hex(found)) of its parent \(parent); the parent was changed after this child was made"
        case .unsupported(let file, let feature):
            return "\(file): unsupported \(feature)"
        case .outOfRange(let what, let offset, let length, let capacity):
            return "\(what) of \(length) bytes at offset \(offset) lies outside the disk's \(capacity) bytes"
        case .readOnly(let file, let reason):
            return "\(file) cannot be written: \(reason)"
        case .invalidArgument(let message):
            return message
        case .system(let error):
            return error.description
        case .io(let error):
            return error.description
        }
    }
}

/// A CID as the descriptor writes it: eight lower-case hex digits.
func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: 8 - digits.count) + digits
}
