import Benchmark
import Disk
import Foundation
import IOEngine

/// Our VMDK I/O path alone, with the request pattern `scripts/bench-disk.sh` uses. The side-by-
/// side comparison with qemu-img bench and fio is that script's job (it runs after these in
/// `make bench`); these track our own figures across changes.
let benchmarks: @Sendable () -> Void = {
    let randomStep: UInt64 = 4096 * 7919
    let loads: [(String, DiskLoad)] = [
        ("VMDK 4 KiB random read QD1 (1000 requests)", DiskLoad(requestBytes: 4096, step: randomStep, depth: 1, count: 1000, write: false)),
        ("VMDK 4 KiB random read QD32 (10000 requests)", DiskLoad(requestBytes: 4096, step: randomStep, depth: 32, count: 10000, write: false)),
        ("VMDK 4 KiB random write QD1 (1000 requests)", DiskLoad(requestBytes: 4096, step: randomStep, depth: 1, count: 1000, write: true)),
        ("VMDK 4 KiB random write QD32 (10000 requests)", DiskLoad(requestBytes: 4096, step: randomStep, depth: 32, count: 10000, write: true)),
        ("VMDK 1 MiB sequential read QD8 (256 requests)", DiskLoad(requestBytes: 1 << 20, step: 1 << 20, depth: 8, count: 256, write: false)),
    ]
    for (name, load) in loads {
        Benchmark(name, configuration: .init(metrics: [.wallClock, .throughput], maxDuration: .seconds(10), maxIterations: 50)) { benchmark async throws in
            let disk = try await BenchmarkDisk.shared.open()
            for _ in benchmark.scaledIterations {
                _ = try await load.run(on: disk)
            }
        }
    }
    containerDiskBenchmarks()
    diskForkBenchmarks()
}

/// The benchmarks' disk: a 128 MiB monolithicSparse VMDK with every grain allocated, made on
/// first use on a real file system (O_DIRECT) and unlinked at once (it lives while open).
actor BenchmarkDisk {
    static let shared = BenchmarkDisk()
    private var disk: VirtualDisk?

    func open() async throws -> VirtualDisk {
        if let disk { return disk }
        let engine = try IOEngine()
        let folder = URL(fileURLWithPath: "/var/tmp").appendingPathComponent("vmfork-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let raw = folder.appendingPathComponent("disk.raw")
        var bytes = [UInt8](repeating: 0, count: 128 << 20)
        var state: UInt64 = 1
        for index in stride(from: 0, to: bytes.count, by: 8) {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            bytes[index] = UInt8(truncatingIfNeeded: state >> 33) | 1
        }
        try Data(bytes).write(to: raw)
        let path = folder.appendingPathComponent("disk.vmdk").path
        try await DiskConversion.convert(source: raw.path, sourceIsRaw: true, destination: path, format: .vmdk(.monolithicSparse), engine: engine)
        let opened = try await VirtualDisk.open(path: path, writable: true, engine: engine)
        disk = opened
        return opened
    }
}
