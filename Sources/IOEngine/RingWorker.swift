import CShims
internal import CShims.Uring
import HostSystem
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The I/O thread's side of an engine. Other threads only append batches and jobs to
/// `incoming` and poke the eventfd; everything else here is touched by the I/O thread alone,
/// which is why the class is `@unchecked Sendable`.
///
/// It is also a task executor: tasks that prefer it run on the I/O thread between trips into
/// the kernel, so a request's completion resumes its task with no thread switch at all.
final class RingWorker: TaskExecutor, @unchecked Sendable {
    /// The I/O thread's kernel id once it runs (0 before), for its CPU figures.
    let threadID = Atomic<pid_t>(0)
    let ring: IOUring
    let buffers: BufferRegistry

    private struct Incoming {
        var batches: [Batch] = []
        var jobs: [UnownedJob] = []
        var stopping = false
        /// The thread is (about to be) blocked in the kernel with nothing queued: a new batch
        /// must poke the eventfd. While it runs, it finds new batches without being poked.
        var sleeping = false
    }

    private let incoming = Mutex(Incoming())
    private let freeFileSlots: Mutex<[UInt32]>
    /// An eventfd whose counter the ring always has a read pending on: writing it wakes the
    /// thread from its wait for completions.
    private let wake: FileDescriptor
    private let wakeCounter = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    private static let wakeTag = UInt64.max

    // I/O-thread state. Only the I/O thread touches it, one access at a time, so the runtime's
    // exclusivity checks (a thread-local lookup per access, a dozen accesses per request) are off.
    @exclusivity(unchecked) private var waiting: [(batch: Batch, index: Int)] = []
    @exclusivity(unchecked) private var waitingHead = 0
    @exclusivity(unchecked) private var inFlight: [(batch: Batch, index: Int)?] = []
    @exclusivity(unchecked) private var freeTags: [Int] = []
    @exclusivity(unchecked) private var inFlightCount = 0
    @exclusivity(unchecked) private var wakeArmed = false
    @exclusivity(unchecked) private var readyJobs: [UnownedJob] = []
    @exclusivity(unchecked) private var runningJobs: [UnownedJob] = []
    @exclusivity(unchecked) private var takenBatches: [Batch] = []
    @exclusivity(unchecked) private var stopping = false

    init(ring: IOUring, fileSlots: UInt32, bufferSlots: UInt32) throws(IOUringError) {
        self.ring = ring
        buffers = BufferRegistry(ring: ring, capacity: bufferSlots)
        freeFileSlots = Mutex(Array((0..<fileSlots).reversed()))
        let fd = cshims_uring_wake_eventfd()
        if fd < 0 { throw .system(SystemError(call: "eventfd", errno: errno)) }
        wake = FileDescriptor(adopting: fd)
        wakeCounter.initialize(to: 0)
    }

    deinit {
        wakeCounter.deallocate()
    }

    func registerFile(_ fd: Int32) throws(IOUringError) -> RegisteredFile {
        guard let slot = freeFileSlots.withLock({ $0.popLast() }) else {
            throw .system(SystemError(call: "io_uring_register_files_update (every registered-file slot is taken)", errno: ENFILE))
        }
        do {
            try ring.updateRegisteredFile(slot: slot, fd: fd)
        } catch {
            freeFileSlots.withLock { $0.append(slot) }
            throw error
        }
        return RegisteredFile(slot: slot)
    }

    func unregisterFile(_ file: RegisteredFile) {
        try? ring.updateRegisteredFile(slot: file.slot, fd: -1)
        freeFileSlots.withLock { $0.append(file.slot) }
    }

    func enqueue(_ batch: Batch) {
        let mustWake = incoming.withLock { state in
            state.batches.append(batch)
            defer { state.sleeping = false }
            return state.sleeping
        }
        if mustWake { poke() }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let mustWake = incoming.withLock { state in
            state.jobs.append(job)
            defer { state.sleeping = false }
            return state.sleeping
        }
        if mustWake { poke() }
    }

    func stop() {
        incoming.withLock { $0.stopping = true }
        poke()
    }

    private func poke() {
        _ = cshims_uring_wake(wake.rawValue)
    }

    /// The thread's loop: run the tasks that became ready (their requests going to the kernel
    /// as they come), put every queued request on the ring, submit, wait (only when there is
    /// nothing else to do) for a completion, and hand out completions; until stopped with
    /// nothing in flight.
    func run() {
        cshims_set_thread_name("vmfork-io")
        threadID.store(pid_t(cshims_thread_id()), ordering: .relaxed)
        // Every disk request waits on this thread twice (to be submitted, to be completed), and
        // it sleeps between rounds: when it wakes it must win a core, not wait out a busy
        // thread's time slice (with a CPU-bound thread beside it, a round of 32 writes waited
        // 212 us for a core against fio's 83 us). Raising priority needs CAP_SYS_NICE; without
        // it the thread runs at normal priority. (Foundation's Thread starts at nice 0 whatever
        // the process's nice value.)
        setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, -10)
        while true {
            takeIncoming()
            if !readyJobs.isEmpty { runReadyJobs() }
            if stopping && inFlightCount == 0 && waitingHead == waiting.count && readyJobs.isEmpty { return }
            fillSubmissionQueue()
            // With few requests in flight the next event is a caller's next request or a lone
            // completion, worth polling for; with many, completions come often enough that
            // waiting in the kernel costs little and leaves the CPU to the kernel's own work.
            if readyJobs.isEmpty && inFlightCount <= Self.pollingDepth {
                if inFlightCount > 0 { _ = io_uring_submit(ring.ring) }
                spinForWork()
            }
            // Block only when nothing new came in meanwhile; otherwise just submit and go round.
            let idle = readyJobs.isEmpty && incoming.withLock { state in
                state.sleeping = state.batches.isEmpty && state.jobs.isEmpty
                return state.sleeping
            }
            let submitted = io_uring_submit_and_wait(ring.ring, idle ? 1 : 0)
            // Awake again: what is queued from now on is found without a poke, and the tasks
            // this thread resumes below must not poke it either.
            if idle { incoming.withLock { $0.sleeping = false } }
            if submitted < 0 && submitted != -EINTR && submitted != -EAGAIN && submitted != -EBUSY {
                failEverything(SystemError(call: "io_uring_submit_and_wait", errno: -submitted))
            }
            reapCompletions()
        }
    }

    /// Runs the tasks that became ready; those they make ready run next round. Each task's
    /// requests go to the kernel as soon as it has queued them, so the device starts on the
    /// first while later tasks still run, instead of idling until every task has had its turn.
    /// (Submitting in doubling groups saved system calls but measured slower at QD32.)
    private func runReadyJobs() {
        swap(&readyJobs, &runningJobs)
        for job in runningJobs {
            job.runSynchronously(on: asUnownedTaskExecutor())
            takeIncoming()
            if waitingHead < waiting.count {
                fillSubmissionQueue()
                _ = io_uring_submit(ring.ring)
            }
        }
        runningJobs.removeAll(keepingCapacity: true)
    }

    /// Moves what was queued (by other threads, or by tasks run here) into the thread's own
    /// lists: batches' requests to `waiting`, jobs to `readyJobs`. Swapping arrays keeps this
    /// free of allocations once their capacities have grown.
    private func takeIncoming() {
        incoming.withLock { state in
            swap(&state.batches, &takenBatches)
            readyJobs.append(contentsOf: state.jobs)
            state.jobs.removeAll(keepingCapacity: true)
            stopping = stopping || state.stopping
        }
        for batch in takenBatches {
            for index in batch.requests.indices { waiting.append((batch, index)) }
        }
        takenBatches.removeAll(keepingCapacity: true)
    }

    /// Callers just resumed usually send their next request within microseconds: polling for
    /// it (and for completions) a little while saves the two thread switches that blocking
    /// and being woken would cost per request.
    private func spinForWork() {
        let deadline = ContinuousClock.now + Self.spinTime
        var cqe: UnsafeMutablePointer<io_uring_cqe>?
        var rounds = 0
        while true {
            if cshims_uring_peek_cqe(ring.ring, &cqe) == 0 { return }
            if incoming.withLock({ !$0.batches.isEmpty || !$0.jobs.isEmpty }) { return }
            rounds += 1
            // Reading the clock costs more than a round; look at it now and then.
            if rounds % 32 == 0 && ContinuousClock.now >= deadline { return }
        }
    }

    private static let spinTime = Duration.microseconds(30)
    private static let pollingDepth = 4

    private func fillSubmissionQueue() {
        if !wakeArmed, let sqe = cshims_uring_get_sqe(ring.ring) {
            cshims_uring_prep_read_u64(sqe, wake.rawValue, wakeCounter)
            cshims_uring_sqe_set_data64(sqe, Self.wakeTag)
            wakeArmed = true
        }
        while waitingHead < waiting.count, let sqe = cshims_uring_get_sqe(ring.ring) {
            let (batch, index) = waiting[waitingHead]
            waitingHead += 1
            prepare(sqe, batch: batch, index: index)
        }
        if waitingHead == waiting.count {
            waiting.removeAll(keepingCapacity: true)
            waitingHead = 0
        }
    }

    private func prepare(_ sqe: UnsafeMutablePointer<io_uring_sqe>, batch: Batch, index: Int) {
        let request = batch.requests[index]
        let done = batch.transferred[index]
        let slot = Int32(bitPattern: request.file.slot)
        let address = UnsafeMutableRawPointer(bitPattern: request.address + UInt(done))
        let length = UInt32(request.length - done)
        let offset = request.offset + UInt64(done)
        let fixedBuffer = request.operation == .fdatasync ? nil : buffers.slot(containing: request.address + UInt(done), length: Int(length))
        switch (request.operation, fixedBuffer) {
        case (.read, let buffer?):
            cshims_uring_prep_read_fixed(sqe, slot, address, length, offset, Int32(buffer))
        case (.read, nil):
            cshims_uring_prep_read(sqe, slot, address, length, offset)
        case (.write, let buffer?):
            cshims_uring_prep_write_fixed(sqe, slot, address, length, offset, Int32(buffer))
        case (.write, nil):
            cshims_uring_prep_write(sqe, slot, address, length, offset)
        case (.fdatasync, _):
            cshims_uring_prep_fdatasync(sqe, slot)
        }
        cshims_uring_sqe_use_fixed_file(sqe)
        let tag: Int
        if let free = freeTags.popLast() {
            tag = free
            inFlight[tag] = (batch, index)
        } else {
            tag = inFlight.count
            inFlight.append((batch, index))
        }
        inFlightCount += 1
        cshims_uring_sqe_set_data64(sqe, UInt64(tag))
    }

    private func reapCompletions() {
        var completions = [UnsafeMutablePointer<io_uring_cqe>?](repeating: nil, count: 64)
        while true {
            let count = Int(cshims_uring_peek_batch(ring.ring, &completions, 64))
            if count == 0 { return }
            for position in 0..<count {
                guard let cqe = completions[position] else { continue }
                complete(tag: cshims_uring_cqe_get_data64(cqe), result: cqe.pointee.res)
            }
            cshims_uring_cq_advance(ring.ring, UInt32(count))
        }
    }

    private func complete(tag: UInt64, result: Int32) {
        if tag == Self.wakeTag {
            wakeArmed = false
            return
        }
        guard let (batch, index) = inFlight[Int(tag)] else { return }
        inFlight[Int(tag)] = nil
        freeTags.append(Int(tag))
        inFlightCount -= 1
        let request = batch.requests[index]
        if result == -EINTR || result == -EAGAIN {
            waiting.append((batch, index))
            return
        }
        if result < 0 {
            batch.failure = batch.failure ?? .system(SystemError(call: "io_uring \(request.label)", errno: -result))
        } else if request.operation != .fdatasync {
            batch.transferred[index] += Int(result)
            let unfinished = batch.transferred[index] < request.length
            if unfinished && result > 0 {
                waiting.append((batch, index))
                return
            }
            if unfinished && request.operation == .write {
                batch.failure = batch.failure ?? .system(SystemError(call: "io_uring \(request.label) wrote nothing", errno: EIO))
            }
        }
        finish(batch)
    }

    private func finish(_ batch: Batch) {
        batch.remaining -= 1
        guard batch.remaining == 0 else { return }
        if let failure = batch.failure {
            batch.continuation.resume(returning: .failure(failure))
        } else {
            batch.continuation.resume(returning: .success(batch.transferred))
        }
    }

    /// A ring that cannot submit at all fails every request it holds, so no caller waits forever.
    private func failEverything(_ error: SystemError) {
        let pending = waiting[waitingHead...]
        waiting.removeAll()
        waitingHead = 0
        for (batch, _) in pending {
            batch.failure = batch.failure ?? .system(error)
            finish(batch)
        }
    }
}
