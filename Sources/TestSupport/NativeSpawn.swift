import Foundation

/// Starts a program natively with posix_spawn and waits for it: the reference a process VM
/// is measured against.
public enum NativeSpawn {
    /// Runs `path` with `arguments` (argv, including argv[0]), stdout on `output`; returns
    /// the wait status.
    public static func run(_ path: String, _ arguments: [String], output: Int32) -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, output, 1)
        var pid: pid_t = 0
        let argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        guard posix_spawn(&pid, path, &actions, nil, argv, nil) == 0 else { return -1 }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        return status
    }
}
