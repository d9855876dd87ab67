import Glibc
import HostSystem
import Testing

@Suite struct HostSystemTests {
    @Test func errorNamesTheCallAndErrno() {
        let error = SystemError(call: "open(/nope)", errno: ENOENT)
        #expect(error.description == "open(/nope) failed: No such file or directory (errno 2)")
    }

    @Test func failedOpenThrowsNamedError() {
        #expect(throws: SystemError(call: "open(/definitely/not/here)", errno: ENOENT)) {
            _ = try FileDescriptor.open("/definitely/not/here", O_RDONLY)
        }
    }

    @Test func descriptorIsClosedWhenItGoesAway() throws {
        var raw: Int32 = -1
        do {
            let fd = try FileDescriptor.open("/dev/null", O_RDONLY)
            raw = fd.rawValue
            #expect(fcntl(raw, F_GETFD) != -1)
        }
        #expect(fcntl(raw, F_GETFD) == -1 && errno == EBADF)
    }

    @Test func explicitCloseClosesOnce() throws {
        // At a number well above the lowest free ones, which the other tests' opens (in
        // parallel, in this process) take: a number closed here is not reused meanwhile.
        let opened = try FileDescriptor.open("/dev/null", O_RDONLY)
        let fd = FileDescriptor(adopting: fcntl(opened.rawValue, F_DUPFD_CLOEXEC, 900))
        let raw = fd.rawValue
        #expect(raw >= 900)
        try fd.close()
        #expect(fcntl(raw, F_GETFD) == -1)
    }

    @Test func theDescriptorTableIsGrownAheadWithNoDescriptorLeftOpen() throws {
        let before = try #require(DescriptorTable.size())
        // Four times what it holds, within the descriptor limit (20,000 on this machine).
        let wanted = min(before * 4, DescriptorLimit.raised)
        let after = try #require(DescriptorTable.reserve(wanted))
        #expect(after >= wanted)
        #expect(after > before || before >= DescriptorLimit.raised, "the table did not grow below the limit")
        // The descriptor that grew it is closed again (no other test opens one that high).
        #expect(fcntl(Int32(wanted - 1), F_GETFD) == -1 && errno == EBADF)
        // Asking for less than it holds changes nothing.
        #expect(DescriptorTable.reserve(16) == after)
    }

    @Test func retryingSyscallRetriesEINTR() throws {
        var attempts = 0
        let result = try retryingSyscall("fake") { () -> Int32 in
            attempts += 1
            if attempts < 3 { errno = EINTR; return -1 }
            return 7
        }
        #expect(result == 7 && attempts == 3)
    }

    @Test func memfdHasTheRequestedSize() throws {
        let fd = try makeMemfd(name: "test", size: 1 << 20)
        var info = stat()
        #expect(fstat(fd.rawValue, &info) == 0)
        #expect(info.st_size == 1 << 20)
    }

    @Test func numaTopologyListsThisMachine() throws {
        let topology = try #require(NUMATopology.current())
        #expect(!topology.nodes.isEmpty)
        let cpus = topology.nodes.flatMap(\.cpus)
        #expect(cpus.count == sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        #expect(topology.nodes.allSatisfy { $0.memoryBytes > 0 && $0.freeBytes <= $0.memoryBytes })
    }
}
