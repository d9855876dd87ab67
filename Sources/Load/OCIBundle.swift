import Foundation

/// An OCI runtime bundle for the runc peer: a copy of the image's root filesystem (with the
/// mount points runc needs) and a config.json running one command, read-only root, its own
/// PID, mount, UTS, IPC and network namespaces — what `docker run` would give it.
public struct OCIBundle: Sendable {
    public let folder: URL

    public var rootfs: URL { folder.appendingPathComponent("rootfs") }

    /// Copies `rootfs` into a new bundle under `parent` for `arguments` (argv, program first).
    public init(copying source: String, into parent: URL, name: String, arguments: [String], environment: [String]) throws {
        folder = parent.appendingPathComponent(name, isDirectory: true)
        let manager = FileManager.default
        try? manager.removeItem(at: folder)
        try manager.createDirectory(at: folder, withIntermediateDirectories: true)
        try manager.copyItem(atPath: source, toPath: rootfs.path)
        for mountPoint in ["proc", "dev", "sys", "tmp"] {
            try manager.createDirectory(at: rootfs.appendingPathComponent(mountPoint), withIntermediateDirectories: true)
        }
        let config = Self.config(rootfs: rootfs.path, arguments: arguments, environment: environment)
        try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys]).write(to: folder.appendingPathComponent("config.json"))
    }

    static func config(rootfs: String, arguments: [String], environment: [String]) -> [String: Any] {
        let capabilities = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_NET_BIND_SERVICE"]
        return [
            "ociVersion": "1.0.2",
            "process": [
                "terminal": false,
                "user": ["uid": 0, "gid": 0],
                "args": arguments,
                "env": environment,
                "cwd": "/",
                "capabilities": ["bounding": capabilities, "effective": capabilities, "permitted": capabilities],
                "noNewPrivileges": true,
            ] as [String: Any],
            "root": ["path": rootfs, "readonly": true] as [String: Any],
            "hostname": "runc-peer",
            "mounts": [
                ["destination": "/proc", "type": "proc", "source": "proc"],
                ["destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]],
                ["destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]],
            ],
            "linux": [
                "namespaces": [["type": "pid"], ["type": "ipc"], ["type": "uts"], ["type": "mount"], ["type": "network"]],
                "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
            ] as [String: Any],
        ]
    }
}
