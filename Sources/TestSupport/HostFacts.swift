import Foundation

/// What the machine running the tests offers, so tests that need a device can skip with a
/// reason instead of failing on a machine without it.
public enum HostFacts {
    /// /dev/kvm can be opened read-write by this process.
    public static let hasKVM: Bool = access("/dev/kvm", R_OK | W_OK) == 0

    /// The tests run as root (needed to drop privileges for the denial tests).
    public static let isRoot: Bool = getuid() == 0

    /// The package's root folder, found from this source file's location.
    public static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The folder holding the built products (the test bundle's own folder).
    public static var productsFolder: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    }

    /// A fresh empty folder under the system temporary folder.
    public static func makeTemporaryFolder(_ label: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("vmfork-\(label)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Runs a program to completion and returns its status (128 + signal when a signal
    /// ended it, as a shell reports it) and output.
    public static func run(_ executable: String, _ arguments: [String], stdin: Data? = nil,
                           currentDirectory: URL? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let currentDirectory { process.currentDirectoryURL = currentDirectory }
        let out = Pipe(), err = Pipe(), input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(stdin) }
        try input.fileHandleForWriting.close()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let status = process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
        return (status, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
    }

    /// Sends `signal` to a child process and waits for it to exit, at most `seconds`; then
    /// SIGKILL. False when it had to be killed (the caller reports that as a failure: a daemon
    /// that ignores SIGTERM must fail its test, not hang the test run).
    @discardableResult
    public static func terminate(_ process: Process, signal: Int32 = SIGTERM, within seconds: TimeInterval = 30) -> Bool {
        guard process.isRunning else { return true }
        kill(process.processIdentifier, signal)
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning, Date() < deadline { usleep(10_000) }
        let ended = !process.isRunning
        if !ended { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return ended
    }

    /// A TCP port on loopback that nothing listens on now (the kernel's pick for port 0).
    public static func freeTCPPort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        // unsafe: sockaddr_in is a sockaddr of the size given.
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        return bound ? Int(UInt16(bigEndian: address.sin_port)) : Int.random(in: 20000...30000)
    }
}
