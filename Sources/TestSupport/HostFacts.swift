import CShims
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
    /// ended it, as a shell reports it) and output. With posix_spawn, not Foundation's
    /// `Process`: its `run()` on this machine's Foundation reads past a buffer while it lists
    /// /proc/self/fd (swift-corelibs-foundation#5472, fixed upstream in 2026-05) and crashed a
    /// test run with many descriptors open; the child here gets only 0, 1 and 2.
    /// `environment` replaces this process's for the child; `combined` sends its stderr into
    /// the stdout pipe (the order in which it wrote the two, as a terminal shows them).
    public static func run(_ executable: String, _ arguments: [String], stdin: Data? = nil, currentDirectory: URL? = nil,
                           environment: [String: String]? = nil, combined: Bool = false) throws -> (status: Int32, stdout: String, stderr: String) {
        var input: [Int32] = [-1, -1], output: [Int32] = [-1, -1], error: [Int32] = [-1, -1]
        defer { for fd in input + output + error where fd >= 0 { close(fd) } }
        for index in 0..<3 {
            let made = index == 0 ? pipe(&input) : index == 1 ? pipe(&output) : pipe(&error)
            guard made == 0 else { throw RunError(description: "pipe: \(String(cString: strerror(errno)))") }
        }
        for fd in [input[1], output[0], error[0]] { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, input[0], 0)
        posix_spawn_file_actions_adddup2(&actions, output[1], 1)
        posix_spawn_file_actions_adddup2(&actions, combined ? output[1] : error[1], 2)
        cshims_spawn_addclosefrom(&actions, 3)
        if let currentDirectory { cshims_spawn_addchdir(&actions, currentDirectory.path) }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let envp = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
        defer { for pointer in envp ?? [] { free(pointer) } }
        var pid: pid_t = 0
        let spawned = envp.map { envp in
            // unsafe: `envp` is strdup'd strings ending in nil, freed only by the defer; posix_spawn copies them during the call.
            envp.withUnsafeBufferPointer { posix_spawn(&pid, executable, &actions, nil, argv, $0.baseAddress) }
        } ?? posix_spawn(&pid, executable, &actions, nil, argv, environ)
        guard spawned == 0 else { throw RunError(description: "cannot run \(executable): \(String(cString: strerror(spawned)))") }
        for index in [0, 1, 2] {
            let fd = index == 0 ? input[0] : index == 1 ? output[1] : error[1]
            close(fd)
            if index == 0 { input[0] = -1 } else if index == 1 { output[1] = -1 } else { error[1] = -1 }
        }
        // Standard input from a thread of its own, so that a child that writes much before it
        // reads cannot stall both sides.
        let writer = Thread { [fd = input[1], bytes = stdin ?? Data()] in
            // unsafe: write reads [offset, count) of the Data's bytes, offset < count, while the closure runs.
            bytes.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let written = write(fd, raw.baseAddress! + offset, raw.count - offset)
                    if written < 0 && errno == EINTR { continue }
                    if written <= 0 { break }
                    offset += written
                }
            }
            close(fd)
        }
        input[1] = -1
        writer.start()
        var (out, err) = (Data(), Data())
        var open = [output[0], error[0]]
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !open.isEmpty {
            var polled = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            guard poll(&polled, nfds_t(polled.count), -1) >= 0 || errno == EINTR else { break }
            for entry in polled where entry.revents != 0 {
                let count = read(entry.fd, &buffer, buffer.count)
                if count > 0 {
                    if entry.fd == output[0] { out.append(contentsOf: buffer[..<count]) } else { err.append(contentsOf: buffer[..<count]) }
                } else if count == 0 || errno != EINTR {
                    open.removeAll { $0 == entry.fd }
                }
            }
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let signal = status & 0x7f
        let code = signal == 0 ? (status >> 8) & 0xff : 128 + signal
        return (code, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
    }

    public struct RunError: Error, CustomStringConvertible {
        public let description: String
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
