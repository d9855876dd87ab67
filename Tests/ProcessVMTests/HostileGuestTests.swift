import Foundation
import KVM
import ProcessVM
import TestSupport
import Testing

/// Hostile guests (issue #11): static programs with raw system calls, no libc, each trying
/// one way across the guest boundary. Every test asserts that the attack fails and that the
/// engine, and a healthy VM run after it, go on normally.
@Suite(.enabled(if: HostFacts.hasKVM && HostileGuest.isAvailable, "needs /dev/kvm and gcc"))
struct HostileGuestTests {
    /// A healthy guest after an attack: the engine still runs VMs normally.
    static func engineStillHealthy() throws {
        let healthy = try GuestRunner.run(["/prog"], rootfs: try GuestRunner.rootfs(withProgram: TinyELF.exit(5)))
        #expect(healthy.status == 5)
    }

    @Test func preludeBuildsAndRuns() throws {
        let root = try HostileGuest.rootfs(#"int main(void) { print("hostile hello\n"); return 7; }"#)
        let result = try GuestRunner.run(["/prog"], rootfs: root)
        #expect(result.stdout == "hostile hello\n")
        #expect(result.status == 7)
    }
}
