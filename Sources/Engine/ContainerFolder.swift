import Foundation

/// A container's log folder, made and removed with the few system calls that takes: profiling
/// the daemon over `POST /v1/containers/run` found FileManager's recursive create and remove
/// at 14 % of its CPU (a stat of every ancestor, a directory walk to delete three files).
enum ContainerFolder {
    /// The files a container's folder holds (see `ContainerStreams`).
    static let knownFiles = ["stdout.log", "stderr.log", "stdout.times", "stderr.times", "stdin"]

    /// The log file of `stream` (stdout or stderr) in a container's folder.
    static func logFile(_ stream: LogStream) -> String { stream == .stderr ? "stderr.log" : "stdout.log" }

    /// Its time index (`LogTimeIndex`).
    static func timesFile(_ stream: LogStream) -> String { stream == .stderr ? "stderr.times" : "stdout.times" }

    /// Makes `folder` (mode 0700); its parent is made too when missing.
    static func make(_ folder: URL) throws {
        if mkdir(folder.path, 0o700) == 0 || errno == EEXIST { return }
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    /// Removes `folder` and what it holds: the known files, then the folder; anything else
    /// found there (a file a later version writes) by a walk.
    static func remove(_ folder: URL) {
        for name in knownFiles { unlink(folder.appendingPathComponent(name).path) }
        if rmdir(folder.path) == 0 || errno == ENOENT { return }
        try? FileManager.default.removeItem(at: folder)
    }
}
