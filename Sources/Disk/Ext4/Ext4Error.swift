/// Why an ext4 file system could not be read or written. Every case names the disk and the
/// structure or path that was wrong.
public enum Ext4Error: Error, CustomStringConvertible, Sendable, Equatable {
    /// A structure on the disk holds a value the format does not allow (a corrupt or hostile image).
    case corrupt(disk: String, structure: String, problem: String)
    /// The file system uses something this code does not implement.
    case unsupported(disk: String, feature: String)
    /// The file system has no room left.
    case full(disk: String, what: String)
    /// A change asked of the writer cannot be made (a path through a file, a link to nothing...).
    case invalidChange(path: String, problem: String)
    case disk(DiskError)

    public var description: String {
        switch self {
        case .corrupt(let disk, let structure, let problem): return "\(disk): corrupt ext4 \(structure): \(problem)"
        case .unsupported(let disk, let feature): return "\(disk): unsupported ext4 \(feature)"
        case .full(let disk, let what): return "\(disk): the ext4 file system has no free \(what)"
        case .invalidChange(let path, let problem): return "\(path): \(problem)"
        case .disk(let error): return error.description
        }
    }
}
