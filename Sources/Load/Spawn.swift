import Foundation

/// A program started with posix_spawn: standard input from what was given (or /dev/null),
/// standard output on a pipe the caller reads, standard error discarded.
struct SpawnedProcess {
    let pid: pid_t
    let output: Int32

    struct SpawnError: Error, CustomStringConvertible {
        let description: String
    }

    init(path: String, arguments: [String], environment: [String], stdin: String?) throws {
        var outputEnds: [Int32] = [-1, -1]
        var inputEnds: [Int32] = [-1, -1]
        // Socket pairs, not pipes: made close-on-exec at once (Glibc's pipe2 is not imported),
        // so no other launch's child inherits an end from a spawn on another thread.
        guard Self.channel(&outputEnds) else { throw SpawnError(description: "socketpair: \(String(cString: strerror(errno)))") }
        if stdin != nil, !Self.channel(&inputEnds) {
            close(outputEnds[0]); close(outputEnds[1])
            throw SpawnError(description: "socketpair: \(String(cString: strerror(errno)))")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if stdin != nil {
            posix_spawn_file_actions_adddup2(&actions, inputEnds[0], 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, outputEnds[1], 1)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, &actions, nil, argv, envp)
        close(outputEnds[1])
        if stdin != nil { close(inputEnds[0]) }
        guard result == 0 else {
            close(outputEnds[0])
            if stdin != nil { close(inputEnds[1]) }
            throw SpawnError(description: "posix_spawn \(path): \(String(cString: strerror(result)))")
        }
        self.pid = pid
        output = outputEnds[0]
        if let stdin {
            // The child reads it; a write past the pipe's buffer waits for it.
            let bytes = Array(stdin.utf8)
            var done = 0
            while done < bytes.count {
                // unsafe: done < count, so the pointer and length stay inside the buffer.
                let written = bytes.withUnsafeBytes { raw in write(inputEnds[1], raw.baseAddress! + done, raw.count - done) }
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { break }
                done += written
            }
            close(inputEnds[1])
        }
    }

    private static func channel(_ ends: inout [Int32]) -> Bool {
        socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0
    }

    /// Reads the output to its end; `onFirst` runs when its first bytes arrive.
    func drainOutput(onFirst: () -> Void) {
        var buffer = [UInt8](repeating: 0, count: 4096)
        var first = true
        while true {
            let count = read(output, &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            if first {
                onFirst()
                first = false
            }
        }
        close(output)
    }

    /// Waits for it to end: the exit code, or 128 + signal.
    func wait() -> Int {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let signal = status & 0x7F
        return signal == 0 ? Int((status >> 8) & 0xFF) : 128 + Int(signal)
    }
}
