import CShims
internal import CShims.Uring
import Foundation
import HostSystem
import Synchronization

/// The engine's asynchronous I/O: one thread that owns one io_uring, and an async API for
/// the rest of the engine. Callers hand over batches of requests; the thread puts them on
/// the ring and submits them (a task running on the thread: as soon as it has queued them),
/// and resumes each batch's caller when its last request completes. More threads means more
/// engines. The async methods are `nonisolated(nonsending)`: they run on the caller's
/// executor, with no hop before the request is queued.
public final class IOEngine: Sendable {
    private let worker: RingWorker
    private let requestCount = Atomic<Int>(0)

    /// Requests submitted so far: what a caller's batching and coalescing come down to.
    public var requestsSubmitted: Int { requestCount.load(ordering: .relaxed) }

    /// The I/O thread's kernel id once it runs (for its CPU time in /proc).
    public var kernelThreadID: pid_t? {
        let id = worker.threadID.load(ordering: .relaxed)
        return id == 0 ? nil : id
    }

    /// Starts the I/O thread with a ring of `queueDepth` entries and room for `registeredFiles`
    /// files and `registeredBuffers` buffers.
    public init(queueDepth: UInt32 = 256, registeredFiles: UInt32 = 4096, registeredBuffers: UInt32 = 1024) throws(IOUringError) {
        let ring = try IOUring(entries: queueDepth)
        try ring.reserveRegistrationTables(files: registeredFiles, buffers: registeredBuffers)
        worker = try RingWorker(ring: ring, fileSlots: registeredFiles, bufferSlots: registeredBuffers)
        let worker = worker
        Thread { worker.run() }.start()
    }

    deinit {
        worker.stop()
    }

    /// Runs tasks on this engine's I/O thread (`withTaskExecutorPreference(engine.executor)`):
    /// their requests are submitted and their completions resumed without a thread switch.
    /// Such tasks should not block the thread, and the engine must outlive them.
    public var executor: any TaskExecutor { worker }

    /// Registers `fd` in the ring's file table. The kernel keeps its own reference, so the
    /// caller may close `fd` afterwards; `unregister` gives the slot back.
    public func register(_ fd: borrowing FileDescriptor) throws(IOUringError) -> RegisteredFile {
        try worker.registerFile(fd.rawValue)
    }

    public func unregister(_ file: RegisteredFile) {
        worker.unregisterFile(file)
    }

    /// Page-aligned memory, registered with this engine's ring while slots last.
    public func makeBuffer(count: Int) -> IOBuffer {
        IOBuffer(count: count, registry: worker.buffers)
    }

    /// Runs `requests` as one batch and returns the bytes each moved (a read stops short only
    /// at end of file). Requests of one batch run in any order; submit a second batch after
    /// the first returns when order matters.
    nonisolated(nonsending) public func submit(_ requests: [IORequest]) async throws(IOUringError) -> [Int] {
        if requests.isEmpty { return [] }
        requestCount.add(requests.count, ordering: .relaxed)
        // unsafe: resumed exactly once: the I/O thread resumes a batch when its last request finishes (`requests` is not
        // empty here). Unsafe rather than checked: the checked kind allocates a guard object per call.
        let result = await withUnsafeContinuation { (continuation: UnsafeContinuation<Result<[Int], IOUringError>, Never>) in
            worker.enqueue(Batch(requests: requests, continuation: continuation))
        }
        return try result.get()
    }

    nonisolated(nonsending) public func read(_ file: RegisteredFile, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) async throws(IOUringError) -> Int {
        try await submit([.read(file, into: buffer, at: offset)])[0]
    }

    nonisolated(nonsending) public func write(_ file: RegisteredFile, from buffer: UnsafeRawBufferPointer, at offset: UInt64) async throws(IOUringError) -> Int {
        try await submit([.write(file, from: buffer, at: offset)])[0]
    }

    nonisolated(nonsending) public func fdatasync(_ file: RegisteredFile) async throws(IOUringError) {
        _ = try await submit([.fdatasync(file)])
    }
}

/// Requests submitted together, and the caller waiting for all of them.
///
/// `@unchecked Sendable`: `requests` and `continuation` are `let`s; the `var`s are set in init, then touched only by the
/// I/O thread, which `RingWorker.enqueue` hands the batch to through the `incoming` Mutex.
final class Batch: @unchecked Sendable {
    let requests: [IORequest]
    // Touched by the I/O thread alone once the batch is queued (see RingWorker's state).
    @exclusivity(unchecked) var transferred: [Int]
    @exclusivity(unchecked) var remaining: Int
    @exclusivity(unchecked) var failure: IOUringError?
    let continuation: UnsafeContinuation<Result<[Int], IOUringError>, Never>

    init(requests: [IORequest], continuation: UnsafeContinuation<Result<[Int], IOUringError>, Never>) {
        self.requests = requests
        transferred = Array(repeating: 0, count: requests.count)
        remaining = requests.count
        self.continuation = continuation
    }
}
