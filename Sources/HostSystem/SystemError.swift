import CShims
#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: which call, and the errno it returned.
///
/// Every wrapper in the engine throws this so that an error message always names the
/// call that failed, not only a number.
public struct SystemError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The call that failed, e.g. `open(/dev/kvm)` or `ioctl(KVM_CREATE_VM)`.
    public let call: String
    public let errno: Int32

    public init(call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String {
        "\(call) failed: \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// Runs a system call, retrying it while it fails with EINTR, and turns a -1 result into a
/// `SystemError` naming `call`. This is the one place EINTR is handled. Only for calls that
/// cannot wait on something a guest controls (a pipe, a FIFO, a terminal): retrying would
/// swallow the signal that kill and stop send, so those calls are made without waiting and
/// the waits done interruptibly (ProcessVM's `HostAccess`, `waitingTransfer`).
@inlinable
public func retryingSyscall<T: FixedWidthInteger>(_ call: @autoclosure () -> String, _ body: () -> T) throws(SystemError) -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let code = cshims_errno()
        if code == EINTR { continue }
        throw SystemError(call: call(), errno: code)
    }
}
