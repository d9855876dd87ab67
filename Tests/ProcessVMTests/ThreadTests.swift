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
}
