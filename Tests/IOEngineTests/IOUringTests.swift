import IOEngine
import Testing

@Suite struct IOUringTests {
    @Test func ringSetsUpAndReportsOpcodes() throws {
        let ring = try IOUring(entries: 8)
        let opcodes = try ring.supportedOpcodes()
        #expect(opcodes.count == IOUring.requiredOpcodes.count)
        #expect(opcodes.allSatisfy { $0.supported })
    }

    @Test func refusedSetupExplainsTheCause() {
        let error = IOUringError.unavailable(errno: 1, hint: "x")
        #expect(error.description.contains("io_uring_setup failed"))
    }
}
