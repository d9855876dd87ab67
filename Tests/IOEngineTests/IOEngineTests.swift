import Foundation
import HostSystem
import IOEngine
import TestSupport
import Testing

/// The async engine on a real io_uring: batches, registered files and buffers, errors.
@Suite struct IOEngineTests {
    /// An open file holding `bytes`, already unlinked so that nothing is left behind.
    private func temporaryFile(_ bytes: [UInt8], _ flags: Int32) throws -> FileDescriptor {
        let folder = try HostFacts.makeTemporaryFolder("ioengine")
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("data").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return try FileDescriptor.open(path, flags)
    }

    @Test func batchedWritesThenReadsRoundTripThroughRegisteredBuffers() async throws {
        let engine = try IOEngine(queueDepth: 8)
        let fd = try temporaryFile([UInt8](repeating: 0, count: 1 << 20), O_RDWR)
        let file = try engine.register(fd)
        defer { engine.unregister(file) }
        // More requests than the ring has entries: the engine must queue the rest.
        let count = 40
        let source = engine.makeBuffer(count: count * 4096)
        #expect(source.isRegistered)
        for index in 0..<source.count { source.bytes[index] = UInt8(truncatingIfNeeded: index &* 13 &+ index / 4096) }
        let writes = (0..<count).map { (index: Int) -> IORequest in
            let piece = UnsafeRawBufferPointer(start: source.base + index * 4096, count: 4096)
            return IORequest.write(file, from: piece, at: UInt64(index) * 8192)
        }
        #expect(try await engine.submit(writes) == Array(repeating: 4096, count: count))
        try await engine.fdatasync(file)
        let target = engine.makeBuffer(count: count * 4096)
        let reads = (0..<count).map { (index: Int) -> IORequest in
            let piece = UnsafeMutableRawBufferPointer(start: target.base + index * 4096, count: 4096)
            return IORequest.read(file, into: piece, at: UInt64(index) * 8192)
        }
        #expect(try await engine.submit(reads) == Array(repeating: 4096, count: count))
        #expect(memcmp(source.base, target.base, count * 4096) == 0)
        var onDisk = [UInt8](repeating: 0, count: 4096)
        #expect(pread(fd.rawValue, &onDisk, 4096, 8192) == 4096)
        #expect(onDisk.elementsEqual(source.bytes[4096..<8192]))
    }

    @Test func unregisteredMemoryAndConcurrentCallersWork() async throws {
        let engine = try IOEngine(queueDepth: 4)
        let bytes = (0..<65536).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let file = try engine.register(try temporaryFile(bytes, O_RDONLY))
        let results = try await withThrowingTaskGroup(of: Bool.self) { group in
            for task in 0..<64 {
                group.addTask {
                    // Plain heap memory, outside every registered buffer.
                    let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 1024, alignment: 8)
                    defer { chunk.deallocate() }
                    let offset = (task * 1024) % 65536
                    let got = try await engine.submit([.read(file, into: chunk, at: UInt64(offset))])[0]
                    return got == 1024 && chunk.elementsEqual(bytes[offset..<offset + 1024])
                }
            }
            return try await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(results.count == 64 && results.allSatisfy { $0 })
    }

    @Test func readStopsShortAtEndOfFile() async throws {
        let engine = try IOEngine()
        let file = try engine.register(try temporaryFile([1, 2, 3], O_RDONLY))
        let buffer = engine.makeBuffer(count: 4096)
        #expect(try await engine.read(file, into: buffer.bytes, at: 0) == 3)
        #expect(try await engine.read(file, into: buffer.bytes, at: 100) == 0)
    }

    @Test func failedRequestNamesTheOperationAndErrno() async throws {
        let engine = try IOEngine()
        let file = try engine.register(try temporaryFile([0], O_RDONLY))
        let buffer = engine.makeBuffer(count: 512)
        let error = await #expect(throws: IOUringError.self) {
            _ = try await engine.write(file, from: UnsafeRawBufferPointer(buffer.bytes), at: 0)
        }
        guard case .system(let system) = error else {
            Issue.record("expected a failed request, got \(String(describing: error))")
            return
        }
        #expect(system.errno == EBADF)
        #expect(system.call.contains("write(file slot \(file.slot), 512 bytes at 0)"))
    }

    @Test func tasksPreferringTheEngineRunOnItsThreadAndGetTheirData() async throws {
        let engine = try IOEngine(queueDepth: 8)
        let bytes = (0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 11) }
        let file = try engine.register(try temporaryFile(bytes, O_RDONLY))
        let threadNames = try await withTaskExecutorPreference(engine.executor) {
            try await withThrowingTaskGroup(of: String.self) { group in
                for task in 0..<32 {
                    group.addTask {
                        let buffer = engine.makeBuffer(count: 2048)
                        let offset = (task * 2048) % 65536
                        let got = try await engine.read(file, into: buffer.bytes, at: UInt64(offset))
                        #expect(got == 2048 && buffer.bytes.elementsEqual(bytes[offset..<offset + 2048]))
                        return currentThreadName()
                    }
                }
                return try await group.reduce(into: Set<String>()) { $0.insert($1) }
            }
        }
        #expect(threadNames == ["vmfork-io"])
    }

    @Test func aRequestIsExtendedOnlyByOneThatContinuesItInFileAndMemory() throws {
        let engine = try IOEngine()
        let file = try engine.register(try temporaryFile([0], O_RDONLY))
        let otherFile = try engine.register(try temporaryFile([0], O_RDONLY))
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: 3 * 4096, alignment: 4096)
        defer { memory.deallocate() }
        func piece(_ index: Int) -> UnsafeMutableRawBufferPointer {
            UnsafeMutableRawBufferPointer(rebasing: memory[index * 4096..<(index + 1) * 4096])
        }
        let first = IORequest.read(file, into: piece(0), at: 8192)
        let joined = first.extended(by: .read(file, into: piece(1), at: 12288))
        #expect(joined == .read(file, into: UnsafeMutableRawBufferPointer(rebasing: memory[0..<8192]), at: 8192))
        #expect(first.extended(by: .read(file, into: piece(2), at: 12288)) == nil)
        #expect(first.extended(by: .read(file, into: piece(1), at: 16384)) == nil)
        #expect(first.extended(by: .read(otherFile, into: piece(1), at: 12288)) == nil)
        #expect(first.extended(by: .write(file, from: UnsafeRawBufferPointer(piece(1)), at: 12288)) == nil)
    }

    /// A task's request goes to the kernel as soon as the task has queued it, not after every
    /// other task that became ready in the same round has run: the device should not idle
    /// while they do. The first task writes into a pipe through the ring; the second, run
    /// right after it on the I/O thread, looks whether the byte has arrived.
    @Test func aTasksRequestReachesTheKernelBeforeTheNextReadyTaskRuns() async throws {
        let engine = try IOEngine()
        var ends: [Int32] = [0, 0]
        try #require(pipe(&ends) == 0)
        let readEnd = FileDescriptor(adopting: ends[0])
        let readable = readEnd.rawValue
        #expect(fcntl(readable, F_SETFL, O_NONBLOCK) == 0)
        let writeEnd = try engine.register(FileDescriptor(adopting: ends[1]))
        defer { engine.unregister(writeEnd) }
        let message = engine.makeBuffer(count: 1)
        let seenByNextTask = try await withTaskExecutorPreference(engine.executor) {
            // Both children are queued while their parent runs, so they run in one round, in order.
            try await withThrowingTaskGroup(of: Bool?.self) { group in
                group.addTask {
                    let written = try await engine.write(writeEnd, from: UnsafeRawBufferPointer(message.bytes), at: 0)
                    #expect(written == 1)
                    return nil
                }
                group.addTask {
                    var byte: UInt8 = 0
                    return read(readable, &byte, 1) == 1
                }
                return try await group.reduce(into: [Bool]()) { seen, result in
                    if let result { seen.append(result) }
                }
            }
        }
        #expect(seenByNextTask == [true])
    }

    /// The calling thread's name, from /proc (Foundation's Thread.current is not available in
    /// async code).
    private func currentThreadName() -> String {
        let name = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? ""
        return name.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
