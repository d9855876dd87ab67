import Foundation
import KVM
import ProcessVM
import TestSupport

/// Runs programs in process VMs for the tests, capturing their streams.
enum GuestRunner {
    static let system: KVMSystem? = try? KVMSystem()

    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
        let vm: ProcessVM
    }

    static func run(_ arguments: [String], rootfs: URL, executable: String? = nil, environment: [String] = [],
                    stdin: Data = Data(), memoryMiB: Int = 64, pollsSystemCalls: Bool = false, blankMadeAhead: Bool = false,
                    rewritesSystemCalls: Bool = true, buffersOutput: Bool = true) throws -> Result {
        let streams = try CapturedStreams(stdin: stdin)
        var configuration = ProcessVMConfiguration(rootfs: rootfs.path, memoryBytes: memoryMiB << 20, pollsSystemCalls: pollsSystemCalls)
        configuration.rewritesSystemCalls = rewritesSystemCalls
        configuration.buffersOutput = buffersOutput
        let standard = StandardStreams(input: streams.input, output: streams.output, error: streams.error)
        let vm = blankMadeAhead
            ? try ProcessVM(blank: BlankVM(system: system!, memoryBytes: configuration.memoryBytes, entersOnce: true), configuration: configuration,
                            executable: executable ?? arguments[0], arguments: arguments, environment: environment, streams: standard)
            : try ProcessVM(system: system!, configuration: configuration, executable: executable ?? arguments[0],
                            arguments: arguments, environment: environment, streams: standard)
        let status = try vm.run()
        return Result(status: status.code, stdout: streams.stdout, stderr: streams.stderr, vm: vm)
    }

    /// A rootfs holding one tiny program at /prog.
    static func rootfs(withProgram code: [UInt8]) throws -> URL {
        let root = try HostFacts.makeTemporaryFolder("tiny")
        let path = root.appendingPathComponent("prog")
        try Data(TinyELF.build(code: code)).write(to: path)
        chmod(path.path, 0o755)
        return root
    }
}
