import Foundation
import TestSupport
import Testing

/// A rootfs whose symlinks and `..` point outside it: the program inside sees only the
/// rootfs, never the host file next to it.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"))
struct HostileRootfsTests {
    @Test func symlinksAndDotDotNeverLeaveTheRootfs() throws {
        let root = try BusyboxRootfs.make()
        let secret = root.deletingLastPathComponent().appendingPathComponent("secret-\(UUID().uuidString).txt")
        try "HOST SECRET\n".write(to: secret, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: secret) }
        let manager = FileManager.default
        try manager.createSymbolicLink(atPath: root.appendingPathComponent("up").path, withDestinationPath: "../\(secret.lastPathComponent)")
        try manager.createSymbolicLink(atPath: root.appendingPathComponent("absolute").path, withDestinationPath: secret.path)
        try manager.createSymbolicLink(atPath: root.appendingPathComponent("escape").path, withDestinationPath: "../../../../../..")
        try manager.createSymbolicLink(atPath: root.appendingPathComponent("loop-a").path, withDestinationPath: "loop-b")
        try manager.createSymbolicLink(atPath: root.appendingPathComponent("loop-b").path, withDestinationPath: "loop-a")
        let paths = ["/up", "/absolute", "../\(secret.lastPathComponent)", "/../\(secret.lastPathComponent)",
                     "/escape/\(secret.lastPathComponent)", "/escape\(secret.path)", "/loop-a", "data/../../\(secret.lastPathComponent)"]
        let result = try GuestRunner.run(["/bin/busybox", "cat"] + paths, rootfs: root)
        #expect(!result.stdout.contains("HOST SECRET"))
        #expect(!result.stderr.contains("HOST SECRET"))
        #expect(result.status == 1)
        // The rootfs's own files stay reachable through the same tricks.
        let inside = try GuestRunner.run(["/bin/busybox", "cat", "/escape/etc/hostname", "../../etc/hostname"], rootfs: root)
        #expect(inside.stdout == "vmfork-test\nvmfork-test\n")
        // Writing anywhere in the rootfs is refused: it is read-only.
        let write = try GuestRunner.run(["/bin/busybox", "sh", "-c", "echo x > /data/new.txt"], rootfs: root)
        #expect(write.status != 0)
        #expect(!manager.fileExists(atPath: root.appendingPathComponent("data/new.txt").path))
    }
}
