import Foundation

/// A container root filesystem for tests: Debian's static busybox plus a few data files, in
/// a fresh temporary folder. Paths inside it are the same whether a program runs in a process
/// VM (where the folder is "/") or natively with the folder as its working directory, which
/// is what the differential tests rely on.
public enum BusyboxRootfs {
    public static let hostBusybox = "/bin/busybox"
    public static var isAvailable: Bool { FileManager.default.isExecutableFile(atPath: hostBusybox) }

    public static func make() throws -> URL {
        let root = try HostFacts.makeTemporaryFolder("rootfs")
        let manager = FileManager.default
        for folder in ["bin", "etc", "data/sub", "tmp", "dev"] {
            try manager.createDirectory(at: root.appendingPathComponent(folder), withIntermediateDirectories: true)
        }
        try manager.copyItem(atPath: hostBusybox, toPath: root.appendingPathComponent("bin/busybox").path)
        for applet in ["sh", "echo", "cat", "ls"] {
            try manager.createSymbolicLink(atPath: root.appendingPathComponent("bin/\(applet)").path, withDestinationPath: "busybox")
        }
        try "vmfork-test\n".write(to: root.appendingPathComponent("etc/hostname"), atomically: true, encoding: .utf8)
        try "hello from the rootfs\nsecond line\n".write(to: root.appendingPathComponent("data/hello.txt"), atomically: true, encoding: .utf8)
        let words = ["pear", "apple", "fig", "banana", "cherry", "apple", "date"]
        try (words.joined(separator: "\n") + "\n").write(to: root.appendingPathComponent("data/words.txt"), atomically: true, encoding: .utf8)
        let numbers = (1...200).map { "\($0 * 37 % 101) line \($0)" }.joined(separator: "\n") + "\n"
        try numbers.write(to: root.appendingPathComponent("data/numbers.txt"), atomically: true, encoding: .utf8)
        try "nested\n".write(to: root.appendingPathComponent("data/sub/nested.txt"), atomically: true, encoding: .utf8)
        var blob = [UInt8](repeating: 0, count: 300_000)
        for index in blob.indices { blob[index] = UInt8(truncatingIfNeeded: index &* 2_654_435_761 >> 13) }
        try Data(blob).write(to: root.appendingPathComponent("data/blob.bin"))
        return root
    }

    /// Runs busybox natively with `root` as its working directory (the reference behaviour),
    /// with exactly `environment` ("NAME=value", in this order) through env -i.
    public static func runNatively(_ arguments: [String], in root: URL, environment: [String] = [], stdin: Data? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        try HostFacts.run("/usr/bin/env", ["-i"] + environment + [hostBusybox] + arguments, stdin: stdin, currentDirectory: root)
    }
}
