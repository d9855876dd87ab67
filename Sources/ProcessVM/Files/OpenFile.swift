import HostSystem

/// One open file description that guest descriptor slots point at. Slots made by dup share
/// one instance, so they share the host descriptor and with it the file offset and status
/// flags, as Linux's open file descriptions do; the host descriptor closes when the last
/// slot lets go.
final class OpenFile {
    let host: FileDescriptor
    /// True for files of the read-only root filesystem (writing them gives EROFS); false
    /// for the standard streams and the allowlisted host devices.
    let isInsideRootfs: Bool

    init(host: consuming FileDescriptor, isInsideRootfs: Bool) {
        self.host = host
        self.isInsideRootfs = isInsideRootfs
    }

    var hostFD: Int32 { host.rawValue }
}

/// A guest descriptor number's entry: the shared open file plus the per-descriptor
/// close-on-exec flag, which Linux keeps per descriptor rather than per open file.
struct DescriptorSlot {
    let file: OpenFile
    var closeOnExec: Bool
}
