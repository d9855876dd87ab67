import Foundation
import KVM
@testable import ProcessVM
import TestSupport
import Testing

/// eventfd, timerfd and epoll (issue #14's event loops), each against the same program run
/// natively; a wait on them ends at a kill; and a warm parent's pipe, eventfd, timerfd and
/// epoll instance are each container's own after a fork, never shared between siblings.
@Suite(.enabled(if: HostFacts.hasKVM && GlibcGuest.isAvailable, "needs /dev/kvm, gcc and glibc's static library"))
struct EventLoopTests {
    static let program = #"""
    #include <errno.h>
    #include <fcntl.h>
    #include <stdint.h>
    #include <stdio.h>
    #include <string.h>
    #include <sys/epoll.h>
    #include <sys/eventfd.h>
    #include <sys/timerfd.h>
    #include <sys/wait.h>
    #include <unistd.h>

    /* The data of the ready events, sorted (the order of one epoll_wait is the kernel's). */
    static void show(const char *what, int ep, int timeout) {
        struct epoll_event events[8];
        int n = epoll_wait(ep, events, 8, timeout);
        unsigned long data[8];
        for (int i = 0; i < n; i++) data[i] = events[i].data.u64;
        for (int i = 0; i < n; i++) for (int j = i + 1; j < n; j++) if (data[j] < data[i]) { unsigned long t = data[i]; data[i] = data[j]; data[j] = t; }
        printf("%s: %d ready:", what, n);
        for (int i = 0; i < n; i++) printf(" %lu", data[i]);
        printf("\n");
    }

    int main(void) {
        setvbuf(stdout, NULL, _IONBF, 0);
        int efd = eventfd(0, EFD_CLOEXEC), tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC), p[2];
        pipe2(p, O_CLOEXEC);
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event e = { .events = EPOLLIN, .data.u64 = 1 };
        epoll_ctl(ep, EPOLL_CTL_ADD, efd, &e);
        e.data.u64 = 2; epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &e);
        e.data.u64 = 3; epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &e);
        show("nothing yet", ep, 0);
        uint64_t value = 5;
        write(efd, &value, 8);
        show("eventfd written", ep, 1000);
        read(efd, &value, 8);
        printf("eventfd read %lu\n", (unsigned long)value);
        write(p[1], "hi", 2);
        show("pipe written", ep, 1000);
        char buffer[16];
        printf("pipe read %zd\n", read(p[0], buffer, sizeof buffer));
        struct itimerspec timer = { .it_value = { 0, 30 * 1000000 } };
        timerfd_settime(tfd, 0, &timer, NULL);
        show("timer armed", ep, 5000);
        uint64_t expirations = 0;
        read(tfd, &expirations, 8);
        struct itimerspec now;
        timerfd_gettime(tfd, &now);
        printf("timer: %lu expiration, disarmed %d\n", (unsigned long)expirations, now.it_value.tv_sec == 0 && now.it_value.tv_nsec == 0);
        timer.it_interval.tv_nsec = 10 * 1000000; timer.it_value.tv_nsec = 10 * 1000000;
        timerfd_settime(tfd, 0, &timer, NULL);
        printf("a blocking read of a periodic timer: %zd, fired %d\n", read(tfd, &expirations, 8), expirations >= 1);
        memset(&timer, 0, sizeof timer);
        timerfd_settime(tfd, 0, &timer, NULL);
        e.events = EPOLLOUT; e.data.u64 = 4;
        printf("mod %d\n", epoll_ctl(ep, EPOLL_CTL_MOD, efd, &e));
        show("eventfd writable", ep, 0);
        printf("del %d\n", epoll_ctl(ep, EPOLL_CTL_DEL, efd, NULL));
        show("after del", ep, 0);
        int semaphore = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK);
        for (int i = 0; i < 4; i++) {
            ssize_t got = read(semaphore, &value, 8);
            printf("semaphore read %zd %lu %s\n", got, got == 8 ? (unsigned long)value : 0UL, got < 0 ? strerror(errno) : "");
        }
        int file = open("prog", O_RDONLY);
        errno = 0; printf("a regular file: %d %s\n", epoll_ctl(ep, EPOLL_CTL_ADD, file, &e), strerror(errno));
        errno = 0; printf("added twice: %d %s\n", epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &e), strerror(errno));
        errno = 0; printf("itself: %d %s\n", epoll_ctl(ep, EPOLL_CTL_ADD, ep, &e), strerror(errno));
        errno = 0; printf("not an epoll: %d %s\n", epoll_ctl(efd, EPOLL_CTL_ADD, p[0], &e), strerror(errno));
        errno = 0; printf("maxevents 0: %d %s\n", epoll_wait(ep, &e, 0, 0), strerror(errno));
        errno = 0; printf("short eventfd read: %zd %s\n", read(efd, buffer, 4), strerror(errno));
        errno = 0; printf("not a timer: %d %s\n", timerfd_gettime(efd, &now), strerror(errno));
        errno = 0; printf("bad clock: %d %s\n", timerfd_create(12345, 0), strerror(errno));
        errno = 0; printf("bad flags: %d %s\n", eventfd(0, 0x4000), strerror(errno));
        pid_t child = fork();
        if (child == 0) { write(p[1], "from the child", 14); _exit(4); }
        show("a child wrote", ep, 5000);
        int status = 0;
        waitpid(child, &status, 0);
        printf("child ended %d; pipe read %zd\n", WEXITSTATUS(status), read(p[0], buffer, sizeof buffer));
        return 0;
    }
    """#

    @Test(arguments: [false, true])
    func epollEventfdAndTimerfdRunAsNatively(polled: Bool) throws {
        let root = try GlibcGuest.rootfs(Self.program, name: "events")
        defer { try? FileManager.default.removeItem(at: root) }
        let native = try HostFacts.run(root.appendingPathComponent("prog").path, [], currentDirectory: root)
        #expect(native.status == 0, "\(native.stderr)")
        let guest = try GuestRunner.run(["/prog"], rootfs: root, pollsSystemCalls: polled)
        #expect(guest.status == native.status, "\(guest.stderr)")
        #expect(guest.stdout == native.stdout)
        #expect(guest.vm.missingSyscalls.isEmpty, "unserved system calls: \(guest.vm.missingSyscalls)")
        #expect(native.stdout.contains("timer armed: 1 ready: 2"), "\(native.stdout)")
    }

    static let waiter = #"""
    #include <stdint.h>
    #include <stdio.h>
    #include <sys/epoll.h>
    #include <sys/eventfd.h>
    #include <unistd.h>
    int main(int argc, char **argv) {
        int efd = eventfd(0, 0), ep = epoll_create1(0);
        struct epoll_event e = { .events = EPOLLIN, .data.u64 = 1 };
        epoll_ctl(ep, EPOLL_CTL_ADD, efd, &e);
        printf("waiting\n");
        fflush(stdout);
        uint64_t value;
        if (argc > 1) read(efd, &value, 8); else epoll_wait(ep, &e, 1, -1);
        return 3;
    }
    """#

    /// A guest waiting for ever in epoll_wait, or in a read of an eventfd nobody writes, ends
    /// at once when it is killed.
    @Test(arguments: [[], ["read"]])
    func aWaitOnEpollOrAnEventfdEndsAtAKill(arguments: [String]) throws {
        let root = try GlibcGuest.rootfs(Self.waiter, name: "waiter")
        defer { try? FileManager.default.removeItem(at: root) }
        let started = Date()
        let result = try HostileGuestTests.run(root, arguments, polled: true, seconds: 0.5)
        #expect(result.status == 137, "killed by the watchdog, not ended by itself: \(result.status) \(result.stdout)")
        #expect(result.stdout == "waiting\n")
        #expect(Date().timeIntervalSince(started) < 10, "the kill ended the wait promptly")
    }

    static let parent = #"""
    #include <stdint.h>
    #include <stdio.h>
    #include <string.h>
    #include <fcntl.h>
    #include <sys/epoll.h>
    #include <sys/eventfd.h>
    #include <sys/timerfd.h>
    #include <unistd.h>
    int main(void) {
        int p[2];
        pipe(p);
        write(p[1], "parent;", 7);
        int efd = eventfd(7, 0), tfd = timerfd_create(CLOCK_MONOTONIC, 0), ep = epoll_create1(0);
        struct itimerspec timer = { .it_value = { 3600, 0 } };
        timerfd_settime(tfd, 0, &timer, NULL);
        struct epoll_event e = { .events = EPOLLIN, .data.u64 = 42 };
        epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &e);
        char line[64];
        ssize_t length = read(0, line, sizeof line - 1);   /* the fork point */
        if (length <= 0) return 9;
        line[length] = 0;
        write(p[1], line, length);
        struct epoll_event ready;
        int n = epoll_wait(ep, &ready, 1, 1000);
        char got[128] = {0};
        read(p[0], got, sizeof got - 1);
        uint64_t count = 0;
        read(efd, &count, 8);
        uint64_t more = 100;
        write(efd, &more, 8);                                /* a sibling sharing it would see 100 */
        struct itimerspec left;
        timerfd_gettime(tfd, &left);
        printf("%s|%d %lu|%lu|%d\n", got, n, n == 1 ? (unsigned long)ready.data.u64 : 0UL, (unsigned long)count,
               left.it_value.tv_sec > 3000);
        return 0;
    }
    """#

    /// Containers forked from a warm parent stopped at its first read get their own pipe
    /// (holding what the parent had written), eventfd (the parent's count), timerfd (what is
    /// left of the parent's timer) and epoll instance (the parent's registration, on their
    /// own pipe): what one child writes or takes, no sibling sees.
    @Test func aWarmParentsPipeEventfdTimerfdAndEpollAreEachChildsOwn() throws {
        let root = try GlibcGuest.rootfs(Self.parent, name: "objects")
        defer { try? FileManager.default.removeItem(at: root) }
        let system = try #require(GuestRunner.system)
        let configuration = ProcessVMConfiguration(rootfs: root.path, memoryBytes: 32 << 20)
        let parentStreams = try CapturedStreams(stdin: Data("unused\n".utf8))
        let point = try #require(try withExtendedLifetime(parentStreams) {
            try ProcessVM.makeForkPoint(system: system, configuration: configuration, executable: "/prog", arguments: ["/prog"],
                                        environment: [], kind: .firstStandardInputRead, streams: parentStreams.standard)
        })
        for name in ["first", "second", "third"] {
            let streams = try CapturedStreams(stdin: Data("\(name)\n".utf8))
            let vm = try ProcessVM(forking: point, into: try PreparedVM(system: system, forkPoint: point, readAhead: true),
                                   identity: GuestIdentity(pid: 2, parentPid: 1), arguments: nil, environment: nil, streams: streams.standard)
            #expect(try vm.run() == .exited(0))
            #expect(streams.stdout == "parent;\(name)\n|1 42|7|1\n", "\(name): \(streams.stdout)")
        }
    }
}
