import IOEngine

/// A closed-loop load on a disk, with the request pattern of `qemu-img bench`: request i
/// goes to `(start + i * step) mod capacity`, and `depth` requests are in flight at once.
/// Shared by `vmfork disk bench` and the package-benchmark suite so that both measure
/// the same thing.
public struct DiskLoad: Sendable {
    public var requestBytes: Int
    public var step: UInt64
    public var depth: Int
    public var count: Int
    public var write: Bool

    public init(requestBytes: Int, step: UInt64, depth: Int, count: Int, write: Bool) {
        self.requestBytes = requestBytes
        self.step = step
        self.depth = depth
        self.count = count
        self.write = write
    }

    /// The offset of request `number` on a disk of `capacity` bytes.
    public func offset(_ number: Int, capacity: UInt64) -> UInt64 {
        let span = capacity / UInt64(requestBytes) * UInt64(requestBytes)
        return (UInt64(number) &* step) % span
    }

    /// Runs the load on `disk` and returns how long it took, in seconds.
    public func run(on disk: VirtualDisk) async throws(DiskError) -> Double {
        // `offset` divides by the request size and takes the remainder by the span of whole
        // requests, and the workers stride by `depth`: a zero there would trap, not throw.
        guard requestBytes > 0, requestBytes % 512 == 0 else {
            throw .invalidArgument("request size \(requestBytes) bytes is not a positive number of 512-byte sectors")
        }
        guard UInt64(requestBytes) <= disk.capacityBytes else {
            throw .invalidArgument("request size \(requestBytes) bytes is more than the disk's \(disk.capacityBytes) bytes")
        }
        guard depth >= 1, count >= 0 else {
            throw .invalidArgument("\(depth) requests in flight and \(count) requests: at least 1 in flight and no negative count are needed")
        }
        let buffers = (0..<depth).map { _ in disk.engine.makeBuffer(count: requestBytes) }
        for buffer in buffers {
            // unsafe: an IOBuffer's bytes are initialized UInt8s; the rebound view covers just its count, for the closure.
            buffer.bytes.withMemoryRebound(to: UInt8.self) { bytes in
                for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: index &* 31 &+ 7) }
            }
        }
        // The first write's one-time CID renewal ends in a flush, whose cost is the host's
        // buffered writes (anyone's), not the requests': it is done before the clock starts.
        if write { try await disk.renewContentID() }
        let clock = ContinuousClock()
        let started = clock.now
        let load = self
        do {
            // The load's tasks run on the engine's I/O thread, as the engine's users should.
            try await withTaskExecutorPreference(disk.engine.executor) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                // Worker k issues requests k, k + depth, k + 2 * depth, ...
                for (worker, buffer) in buffers.enumerated() {
                    group.addTask {
                        for number in stride(from: worker, to: load.count, by: load.depth) {
                            let offset = load.offset(number, capacity: disk.capacityBytes)
                            if load.write {
                                try await disk.write(UnsafeRawBufferPointer(buffer.bytes), at: offset)
                            } else {
                                try await disk.read(into: buffer.bytes, at: offset)
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            }
        } catch let error as DiskError {
            throw error
        } catch {
            throw .invalidArgument("benchmark task failed: \(error)")
        }
        let elapsed = clock.now - started
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }
}
