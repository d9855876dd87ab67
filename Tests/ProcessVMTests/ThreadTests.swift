import Foundation
import ProcessVM
import TestSupport
import Testing

/// Threads in a process VM: each one another vCPU of the process's VM. A C program whose 4
/// pthreads each sum a slice of an array (mutex, condition variable, pthread_join: futexes
/// all), static and dynamic, against the same program run natively.
@Suite(.enabled(if: HostFacts.hasKVM && GlibcGuest.isAvailable, "needs /dev/kvm, gcc and glibc's static library"))
struct ThreadTests {
    static let summingProgram = """
    #include <pthread.h>
    #include <stdio.h>
    #include <unistd.h>
    #include <sys/syscall.h>

    #define N 400000
    #define THREADS 4
    static long values[N];
    static long sums[THREADS];
    static long total;
    static int finished;
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static pthread_cond_t done = PTHREAD_COND_INITIALIZER;
    static pid_t tids[THREADS];

    static void *sum(void *argument) {
        long index = (long)argument, s = 0;
        for (long i = index * (N / THREADS); i < (index + 1) * (N / THREADS); i++) s += values[i];
        sums[index] = s;
        tids[index] = (pid_t)syscall(SYS_gettid);
        pthread_mutex_lock(&lock);
        total += s;
        finished++;
        pthread_cond_signal(&done);
        pthread_mutex_unlock(&lock);
        return (void *)(s & 0xff);
    }

    int main(void) {
        for (long i = 0; i < N; i++) values[i] = i * 7 % 1000 + i / 1000;
        pthread_t threads[THREADS];
        for (long t = 0; t < THREADS; t++)
            if (pthread_create(&threads[t], NULL, sum, (void *)t) != 0) { perror("pthread_create"); return 2; }
        pthread_mutex_lock(&lock);
        while (finished < THREADS) pthread_cond_wait(&done, &lock);
        pthread_mutex_unlock(&lock);
        long joined = 0;
        for (int t = 0; t < THREADS; t++) {
            void *result;
            if (pthread_join(threads[t], &result) != 0) { perror("pthread_join"); return 3; }
            joined += (long)result;
            printf("thread %d: %ld\\n", t, sums[t]);
        }
        int distinct = 1;
        for (int t = 0; t < THREADS; t++) {
            if (tids[t] == getpid()) distinct = 0;
            for (int u = 0; u < t; u++) if (tids[t] == tids[u]) distinct = 0;
        }
        printf("total %ld joined %ld distinct tids %d\\n", total, joined, distinct);
        return 7;
    }
    """

    @Test(arguments: [false, true])
    func staticPthreadsSumAsNatively(polled: Bool) throws {
        let root = try GlibcGuest.rootfs(Self.summingProgram, name: "threads", flags: ["-O1", "-pthread"])
        defer { try? FileManager.default.removeItem(at: root) }
        let host = try HostFacts.run(root.appendingPathComponent("prog").path, [])
        let guest = try GuestRunner.run(["/prog"], rootfs: root, pollsSystemCalls: polled)
        #expect(host.status == 7)
        #expect(guest.status == host.status, "\(guest.stderr) missing: \(guest.vm.missingSyscalls)")
        #expect(guest.stdout == host.stdout)
        #expect(guest.stdout.contains("distinct tids 1"))
    }

    /// A container forked from a warm parent makes threads in its prepared VM like any
    /// process; that VM, with vCPUs beyond its first, is then not reused for a sibling.
    @Test func aForkChildOfAWarmParentRunsThreads() throws {
        let root = try GlibcGuest.rootfs(Self.summingProgram, name: "threads-forked", flags: ["-O1", "-pthread"])
        defer { try? FileManager.default.removeItem(at: root) }
        let host = try HostFacts.run(root.appendingPathComponent("prog").path, [])
        let system = try #require(GuestRunner.system)
        let configuration = ProcessVMConfiguration(rootfs: root.path, memoryBytes: 64 << 20)
        let point = try #require(try ProcessVM.makeForkPoint(system: system, configuration: configuration, executable: "/prog",
                                                             arguments: ["prog"], environment: [], kind: .entry))
        let streams = try CapturedStreams()
        let child = try ProcessVM(forking: point, into: PreparedVM(system: system, forkPoint: point, readAhead: false), identity: GuestIdentity(),
                                  arguments: ["prog"], environment: [], streams: streams.standard)
        #expect(try child.run() == .exited(7))
        #expect(streams.stdout == host.stdout)
        #expect(try PreparedVM(reusing: child) == nil)
    }

    /// The same program linked dynamically: ld.so, libc.so and pthread_create's clone3 from
    /// the rootfs (this host's own files).
    @Test(.enabled(if: DynamicRootfs.isAvailable, "needs ldd"))
    func dynamicPthreadsSumAsNatively() throws {
        let build = try HostFacts.makeTemporaryFolder("threads-build")
        defer { try? FileManager.default.removeItem(at: build) }
        let source = build.appendingPathComponent("threads.c"), program = build.appendingPathComponent("threads")
        try Self.summingProgram.write(to: source, atomically: true, encoding: .utf8)
        let compiled = try HostFacts.run("/usr/bin/gcc", ["-O1", "-pthread", "-o", program.path, source.path])
        try #require(compiled.status == 0, "\(compiled.stderr)")
        let root = try DynamicRootfs.make(programs: [program.path], name: "threads-dynamic")
        defer { try? FileManager.default.removeItem(at: root) }
        let host = try HostFacts.run(program.path, [], currentDirectory: root)
        let guest = try GuestRunner.run([program.path], rootfs: root)
        #expect(guest.status == host.status, "\(guest.stderr) missing: \(guest.vm.missingSyscalls)")
        #expect(guest.stdout == host.stdout)
        #expect(guest.vm.missingSyscalls.isEmpty)
    }

    /// Signals between threads (tgkill to itself and to the first thread, each handled where
    /// it was sent, with a mask of its own), then exit_group from a thread while the first
    /// waits in pthread_join: the process's status is the thread's.
    @Test func signalsBetweenThreadsAndExitGroupAsNatively() throws {
        let source = """
        #include <pthread.h>
        #include <signal.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <sys/syscall.h>
        #include <unistd.h>
        static volatile int first_got, thread_got;
        static pid_t first;
        static void on_first(int signal) { first_got = syscall(SYS_gettid) == first ? signal : -signal; }
        static void on_thread(int signal) { thread_got = syscall(SYS_gettid) != first ? signal : -signal; }
        static void *run(void *unused) {
            syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGUSR2);
            printf("thread handled %d\\n", thread_got);
            syscall(SYS_tgkill, getpid(), first, SIGUSR1);
            while (!first_got) sched_yield();
            printf("first handled %d\\n", first_got);
            fflush(stdout);
            exit(5);
            return unused;
        }
        int main(void) {
            first = syscall(SYS_gettid);
            // The test runner's threads block most signals, and a spawned program inherits that.
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, NULL);
            signal(SIGUSR1, on_first);
            signal(SIGUSR2, on_thread);
            sigset_t mask;
            sigemptyset(&mask);
            sigaddset(&mask, SIGUSR2);
            pthread_t thread;
            pthread_create(&thread, NULL, run, NULL);
            pthread_sigmask(SIG_BLOCK, &mask, NULL);
            pthread_join(thread, NULL);
            printf("never\\n");
            return 0;
        }
        """
        let root = try GlibcGuest.rootfs(source, name: "thread-signals", flags: ["-O1", "-pthread"])
        defer { try? FileManager.default.removeItem(at: root) }
        let host = try HostFacts.run(root.appendingPathComponent("prog").path, [])
        let guest = try HostileGuestTests.run(root, polled: false)
        #expect(host.status == 5)
        #expect(guest.status == host.status, "\(guest.stderr)")
        #expect(guest.stdout == host.stdout)
    }

    /// Stop's SIGTERM, blocked by the first thread, goes to a thread that does not block it,
    /// whose handler runs there.
    @Test func aSignalForTheProcessGoesToAThreadThatDoesNotBlockIt() throws {
        let source = """
        #include <pthread.h>
        #include <signal.h>
        #include <stdio.h>
        #include <sys/syscall.h>
        #include <unistd.h>
        static pid_t first;
        static void on_term(int signal) {
            const char *where = syscall(SYS_gettid) == first ? "first\\n" : "other\\n";
            write(1, where, 6);
            _exit(9);
        }
        static void *run(void *unused) { for (;;) pause(); return unused; }
        int main(void) {
            first = syscall(SYS_gettid);
            signal(SIGTERM, on_term);
            sigset_t mask;
            sigemptyset(&mask);
            sigprocmask(SIG_SETMASK, &mask, NULL);
            pthread_t thread;
            pthread_create(&thread, NULL, run, NULL);
            sigaddset(&mask, SIGTERM);
            pthread_sigmask(SIG_BLOCK, &mask, NULL);
            printf("ready\\n");
            fflush(stdout);
            pthread_join(thread, NULL);
            return 0;
        }
        """
        let root = try GlibcGuest.rootfs(source, name: "thread-term", flags: ["-O1", "-pthread"])
        defer { try? FileManager.default.removeItem(at: root) }
        let streams = try CapturedStreams()
        let vm = try ProcessVM(system: GuestRunner.system!, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 64 << 20),
                               executable: "/prog", arguments: ["/prog"], environment: [], streams: streams.standard)
        let status = HostileFilesTests.runKilled(vm, after: 0.5, within: 5, stop: true)
        #expect(status == 9)
        #expect(streams.stdout == "ready\nother\n")
    }

    /// A fork from a thread: the child has only the calling thread (its other threads'
    /// work is not in it), exits on its own; the parent's threads go on.
    @Test func aForkFromAThreadKeepsOnlyThatThread() throws {
        let source = """
        #include <pthread.h>
        #include <stdio.h>
        #include <sys/wait.h>
        #include <unistd.h>
        static volatile long spins;
        static volatile int stop;
        static void *spin(void *unused) { while (!stop) spins++; return unused; }
        static void *forker(void *unused) {
            pid_t child = fork();
            if (child == 0) {
                long before = spins;
                usleep(20000);
                printf("child: spinner %s\\n", spins == before ? "absent" : "present");
                fflush(stdout);
                _exit(4);
            }
            int status;
            waitpid(child, &status, 0);
            printf("parent: child exited %d\\n", WEXITSTATUS(status));
            return unused;
        }
        int main(void) {
            pthread_t spinner, thread;
            pthread_create(&spinner, NULL, spin, NULL);
            while (!spins) {}
            pthread_create(&thread, NULL, forker, NULL);
            pthread_join(thread, NULL);
            stop = 1;
            pthread_join(spinner, NULL);
            printf("done\\n");
            return 0;
        }
        """
        let root = try GlibcGuest.rootfs(source, name: "thread-fork", flags: ["-O1", "-pthread"])
        defer { try? FileManager.default.removeItem(at: root) }
        let host = try HostFacts.run(root.appendingPathComponent("prog").path, [])
        let guest = try HostileGuestTests.run(root, polled: false, memoryMiB: 64)
        #expect(host.stdout == "child: spinner absent\nparent: child exited 4\ndone\n")
        #expect(guest.status == host.status, "\(guest.stderr)")
        #expect(guest.stdout == host.stdout)
    }

    /// FUTEX_CMP_REQUEUE moves waiters to another word (a wrong value: EAGAIN), a wake there
    /// ends their waits with 0; a WAKE_BITSET whose bits miss the waiter's wakes nobody.
    @Test func futexRequeueAndBitsetAsNatively() throws {
        let source = """
        #include <errno.h>
        #include <linux/futex.h>
        #include <pthread.h>
        #include <stdio.h>
        #include <sys/syscall.h>
        #include <unistd.h>
        static int a, b, c;
        static long futex(int *address, int op, int value, long value2, int *address2, int value3) {
            long result = syscall(SYS_futex, address, op, value, value2, address2, value3);
            return result < 0 ? -errno : result;
        }
        static void *wait_a(void *unused) { return (void *)futex(&a, FUTEX_WAIT_PRIVATE, 0, 0, NULL, 0); }
        static void *wait_c(void *unused) { return (void *)futex(&c, FUTEX_WAIT_BITSET_PRIVATE, 0, 0, NULL, 1); }
        int main(void) {
            pthread_t first, second, third;
            pthread_create(&first, NULL, wait_a, NULL);
            pthread_create(&second, NULL, wait_a, NULL);
            printf("wrong value %ld\\n", futex(&a, FUTEX_CMP_REQUEUE_PRIVATE, 0, 2, &b, 1));
            long moved = 0, woken = 0;
            while (moved < 2) { moved += futex(&a, FUTEX_CMP_REQUEUE_PRIVATE, 0, 2, &b, 0); usleep(1000); }
            while (woken < 2) woken += futex(&b, FUTEX_WAKE_PRIVATE, 2, 0, NULL, 0);
            void *one, *two;
            pthread_join(first, &one);
            pthread_join(second, &two);
            printf("requeued %ld woken %ld returned %ld %ld\\n", moved, woken, (long)one, (long)two);
            pthread_create(&third, NULL, wait_c, NULL);
            usleep(100000);
            printf("other bits woke %ld\\n", futex(&c, FUTEX_WAKE_BITSET_PRIVATE, 1, 0, NULL, 2));
            long right = 0;
            while (right == 0) right = futex(&c, FUTEX_WAKE_BITSET_PRIVATE, 1, 0, NULL, 1);
            void *three;
            pthread_join(third, &three);
            printf("its bit woke %ld returned %ld\\n", right, (long)three);
            return 0;
        }
        """
        let root = try GlibcGuest.rootfs(source, name: "futex-requeue", flags: ["-O1", "-pthread"])
        defer { try? FileManager.default.removeItem(at: root) }
        let host = try HostFacts.run(root.appendingPathComponent("prog").path, [])
        let guest = try HostileGuestTests.run(root, polled: false)
        #expect(host.stdout == "wrong value -11\nrequeued 2 woken 2 returned 0 0\nother bits woke 0\nits bit woke 1 returned 0\n")
        #expect(guest.status == host.status, "\(guest.stderr)")
        #expect(guest.stdout == host.stdout)
    }

    /// futex on an address the program does not own, or not aligned: the same errors as
    /// natively (EFAULT, EINVAL), and a timed wait times out (ETIMEDOUT) with nobody waking it.
    @Test func futexErrorsAsNatively() throws {
        let source = """
        #include <errno.h>
        #include <linux/futex.h>
        #include <stdint.h>
        #include <stdio.h>
        #include <sys/syscall.h>
        #include <time.h>
        #include <unistd.h>
        static int word = 5;
        static long call(void *address, int op, int value, void *timeout) {
            long result = syscall(SYS_futex, address, op, value, timeout, NULL, 0);
            return result < 0 ? -errno : result;
        }
        int main(void) {
            struct timespec short_wait = { 0, 20000000 };
            printf("unmapped wait %ld\\n", call((void *)0x100000000000, FUTEX_WAIT_PRIVATE, 0, NULL));
            printf("kernel wait %ld\\n", call((void *)0xffff800000000000, FUTEX_WAIT, 0, NULL));
            printf("misaligned wait %ld\\n", call((char *)&word + 1, FUTEX_WAIT, 5, NULL));
            printf("unmapped shared wake %ld\\n", call((void *)0x100000000000, FUTEX_WAKE, 1, NULL));
            printf("mismatch %ld\\n", call(&word, FUTEX_WAIT_PRIVATE, 4, NULL));
            printf("timed out %ld\\n", call(&word, FUTEX_WAIT_PRIVATE, 5, &short_wait));
            printf("bad timeout %ld\\n", call(&word, FUTEX_WAIT_PRIVATE, 5, (void *)0x100000000000));
            printf("nobody woken %ld\\n", call(&word, FUTEX_WAKE_PRIVATE, 1, NULL));
            return 0;
        }
        """
        let root = try GlibcGuest.rootfs(source, name: "futex-errors")
        defer { try? FileManager.default.removeItem(at: root) }
        let host = try HostFacts.run(root.appendingPathComponent("prog").path, [])
        let guest = try GuestRunner.run(["/prog"], rootfs: root)
        #expect(guest.status == 0, "\(guest.stderr)")
        #expect(guest.stdout == host.stdout)
        #expect(guest.stdout.contains("unmapped wait -14\n"))
    }

    /// Robust mutexes: a thread that exits holding one leaves it to the next locker with
    /// EOWNERDEAD — one locking after the owner died, one already waiting when it died, and
    /// the first thread exiting with one while another thread lives on — as natively. Without
    /// the robust list's walk the locks time out (each bounded, so the test fails, not hangs).
    @Test(arguments: [false, true])
    func robustMutexesOfADeadThreadAsNatively(polled: Bool) throws {
        let source = """
        #include <errno.h>
        #include <pthread.h>
        #include <stdio.h>
        #include <string.h>
        #include <time.h>
        #include <unistd.h>
        static pthread_mutex_t mutex;
        static pthread_mutex_t held_by_main;
        static volatile int locked = 0;
        static const char *name(int r) { return r == 0 ? "0" : r == EOWNERDEAD ? "EOWNERDEAD" : r == ETIMEDOUT ? "ETIMEDOUT" : strerror(r); }
        static int timed_lock(pthread_mutex_t *m) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 3;
            return pthread_mutex_timedlock(m, &until);
        }
        static void *exits_holding(void *arg) {
            int r = timed_lock(&mutex);
            if (r != 0 && r != EOWNERDEAD) printf("the thread could not lock: %s\\n", name(r));
            locked = 1;
            if (arg) usleep(100000);
            return NULL;
        }
        static void *outlives_main(void *arg) {
            int r = timed_lock(&held_by_main);
            printf("after the first thread exited holding it: %s\\n", name(r));
            fflush(stdout);
            _exit(r == EOWNERDEAD ? 0 : 3);
        }
        int main(void) {
            pthread_mutexattr_t attributes;
            pthread_mutexattr_init(&attributes);
            pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
            pthread_mutex_init(&mutex, &attributes);
            pthread_mutex_init(&held_by_main, &attributes);
            pthread_t thread;
            pthread_create(&thread, NULL, exits_holding, NULL);
            pthread_join(thread, NULL);
            int r = timed_lock(&mutex);
            printf("locked after its owner exited: %s\\n", name(r));
            if (r == EOWNERDEAD) printf("made consistent: %s\\n", name(pthread_mutex_consistent(&mutex)));
            pthread_mutex_unlock(&mutex);

            locked = 0;
            pthread_create(&thread, NULL, exits_holding, (void *)1);
            for (int tries = 0; !locked && tries < 5000; tries++) usleep(1000);
            r = timed_lock(&mutex);
            printf("waiting when its owner exited: %s\\n", name(r));
            if (r == EOWNERDEAD) pthread_mutex_consistent(&mutex);
            pthread_mutex_unlock(&mutex);
            pthread_join(thread, NULL);
            printf("then as usual: %s\\n", name(timed_lock(&mutex)));
            pthread_mutex_unlock(&mutex);
            fflush(stdout);

            pthread_mutex_lock(&held_by_main);
            pthread_create(&thread, NULL, outlives_main, NULL);
            pthread_exit(NULL);
        }
        """
        let root = try GlibcGuest.rootfs(source, name: "robust-mutex", flags: ["-O1", "-pthread"])
        defer { try? FileManager.default.removeItem(at: root) }
        let host = try HostFacts.run(root.appendingPathComponent("prog").path, [])
        #expect(host.status == 0 && host.stdout.contains("locked after its owner exited: EOWNERDEAD"), "\(host)")
        let guest = try GuestRunner.run(["/prog"], rootfs: root, pollsSystemCalls: polled)
        #expect(guest.status == host.status, "\(guest.stderr) missing: \(guest.vm.missingSyscalls)")
        #expect(guest.stdout == host.stdout)
    }

    /// A thread bomb: threads are held by the container's process limit (threads count, as
    /// RLIMIT_NPROC counts them), pthread_create answers EAGAIN, and the process's exit
    /// ends the threads still blocked.
    @Test func aThreadBombIsHeldByTheProcessLimit() throws {
        let source = """
        #include <pthread.h>
        #include <stdio.h>
        #include <string.h>
        #include <unistd.h>
        static void *block(void *unused) { for (;;) pause(); return unused; }
        int main(void) {
            pthread_attr_t attributes;
            pthread_attr_init(&attributes);
            pthread_attr_setstacksize(&attributes, 64 << 10);
            for (int made = 0; made < 100000; made++) {
                pthread_t thread;
                int error = pthread_create(&thread, &attributes, block, NULL);
                if (error != 0) { printf("made %d then %s\\n", made, strerror(error)); return 3; }
            }
            return 0;
        }
        """
        let root = try GlibcGuest.rootfs(source, name: "thread-bomb", flags: ["-O1", "-pthread"])
        defer { try? FileManager.default.removeItem(at: root) }
        let started = ContinuousClock.now
        let guest = try HostileGuestTests.run(root, polled: false)
        #expect(guest.status == 3, "\(guest.stderr)")
        #expect(guest.stdout == "made \(ProcessVMConfiguration.defaultProcessLimit - 1) then Resource temporarily unavailable\n")
        #expect(ContinuousClock.now - started < .seconds(15))
        try HostileGuestTests.expectEngineStillHealthy()
    }

    /// A kill of a container whose threads all wait in futex waits (a condition variable,
    /// pthread_join) ends it promptly, and so does a stop (SIGTERM's default action).
    @Test(arguments: [false, true])
    func killEndsThreadsBlockedInFutexWaits(stop: Bool) throws {
        let source = """
        #include <pthread.h>
        #include <stdio.h>
        static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
        static pthread_cond_t never = PTHREAD_COND_INITIALIZER;
        static int waiting;
        static void *wait_forever(void *unused) {
            pthread_mutex_lock(&lock);
            waiting++;
            for (;;) pthread_cond_wait(&never, &lock);
            return unused;
        }
        int main(void) {
            pthread_t threads[3];
            for (int t = 0; t < 3; t++) pthread_create(&threads[t], NULL, wait_forever, NULL);
            printf("started\\n");
            fflush(stdout);
            pthread_join(threads[0], NULL);
            return 0;
        }
        """
        let root = try GlibcGuest.rootfs(source, name: "futex-kill", flags: ["-O1", "-pthread"])
        defer { try? FileManager.default.removeItem(at: root) }
        let streams = try CapturedStreams()
        let vm = try ProcessVM(system: GuestRunner.system!, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 64 << 20),
                               executable: "/prog", arguments: ["/prog"], environment: [], streams: streams.standard)
        let status = HostileFilesTests.runKilled(vm, after: 0.5, within: 5, stop: stop)
        #expect(status == (stop ? 143 : 137))
        #expect(streams.stdout == "started\n")
    }

    /// One thread unmaps a page another thread keeps writing, then maps fresh memory (new
    /// page tables among it): the writer must fault, as natively, and not write through a
    /// translation of a frame handed out again.
    @Test func aPageUnmappedUnderARunningThreadFaultsThere() throws {
        let source = """
        #include <pthread.h>
        #include <stdio.h>
        #include <sys/mman.h>
        #include <unistd.h>
        static volatile char *page;
        static volatile int running;
        static void *writer(void *unused) { for (;;) { page[0]++; running = 1; } return unused; }
        int main(void) {
            page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            pthread_t thread;
            pthread_create(&thread, NULL, writer, NULL);
            while (!running) {}
            munmap((void *)page, 4096);
            for (int i = 0; i < 64; i++) {
                char *fresh = mmap(NULL, 1 << 21, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (fresh != MAP_FAILED) fresh[4096] = 1;
            }
            usleep(200000);
            printf("the writer went on\\n");
            return 0;
        }
        """
        let root = try GlibcGuest.rootfs(source, name: "unmap-race", flags: ["-O1", "-pthread"])
        defer { try? FileManager.default.removeItem(at: root) }
        let host = try HostFacts.run(root.appendingPathComponent("prog").path, [])
        let guest = try HostileGuestTests.run(root, polled: false, memoryMiB: 256)
        #expect(host.status == 139)
        #expect(guest.status == host.status, "\(guest.stdout) \(guest.stderr)")
        try HostileGuestTests.expectEngineStillHealthy()
    }
}

/// python3's threading (threads, a Lock, a Queue, a timed Event wait) against python3 natively.
@Suite(.enabled(if: HostFacts.hasKVM && DynamicRootfs.isAvailable && DynamicRootfs.python != nil, "needs /dev/kvm, ldd and python3"))
struct PythonThreadTests {
    static let script = """
    import threading, queue
    work, results = queue.Queue(), queue.Queue()
    lock = threading.Lock()
    total = [0]
    def worker(number):
        while True:
            item = work.get()
            if item is None:
                work.task_done()
                return
            with lock:
                total[0] += item
            results.put((number, item * item))
            work.task_done()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads: thread.start()
    for item in range(2000): work.put(item)
    for _ in threads: work.put(None)
    work.join()
    for thread in threads: thread.join()
    squares = []
    while not results.empty(): squares.append(results.get()[1])
    print(total[0], sum(squares), len(squares), threading.active_count())
    print("event", threading.Event().wait(0.05))
    """

    @Test func threadingRunsAsNatively() throws {
        let python = DynamicRootfs.python!
        let library = "/usr/lib/" + URL(fileURLWithPath: python).lastPathComponent
        let root = try DynamicRootfs.make(programs: [python], folders: [library], name: "python-threads")
        defer { try? FileManager.default.removeItem(at: root) }
        let arguments = [python, "-S", "-c", Self.script]
        let environment = ["LC_ALL=C", "PYTHONHASHSEED=0"]
        let guest = try GuestRunner.run(arguments, rootfs: root, environment: environment, memoryMiB: 256)
        let host = try HostFacts.run("/usr/bin/env", ["-i"] + environment + arguments, currentDirectory: root)
        #expect(guest.status == host.status, "\(guest.stderr) missing: \(guest.vm.missingSyscalls)")
        #expect(guest.stdout == host.stdout)
        #expect(host.stdout == "1999000 2664667000 2000 1\nevent False\n")
        #expect(guest.vm.missingSyscalls.isEmpty, "not served: \(guest.vm.missingSyscalls)")
    }
}
