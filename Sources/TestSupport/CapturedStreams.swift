import Foundation
import ProcessVM

/// Standard streams for a guest under test: stdin from bytes, stdout and stderr into
/// temporary files read back after the run (a pipe could fill and block the guest).
public final class CapturedStreams {
    public let input: Int32
    public let output: Int32
    public let error: Int32
    private let folder: URL

    public init(stdin: Data = Data()) throws {
        folder = try HostFacts.makeTemporaryFolder("streams")
        let inputPath = folder.appendingPathComponent("stdin").path
        try stdin.write(to: URL(fileURLWithPath: inputPath))
        input = open(inputPath, O_RDONLY | O_CLOEXEC)
        output = open(folder.appendingPathComponent("stdout").path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        error = open(folder.appendingPathComponent("stderr").path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    }

    deinit {
        close(input)
        close(output)
        close(error)
        try? FileManager.default.removeItem(at: folder)
    }

    /// The streams as a process VM takes them.
    public var standard: StandardStreams { StandardStreams(input: input, output: output, error: error) }

    public var stdout: String { read("stdout") }
    public var stdoutBytes: [UInt8] { Array((try? Data(contentsOf: folder.appendingPathComponent("stdout"))) ?? Data()) }
    public var stderr: String { read("stderr") }

    private func read(_ name: String) -> String {
        (try? String(contentsOf: folder.appendingPathComponent(name), encoding: .utf8)) ?? ""
    }
}
