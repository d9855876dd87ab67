import Engine
import Foundation
@testable import Images
import Metrics
import TestSupport
import Testing

/// A pulled image's config WorkingDir and User are where and whom its containers start as.
@Suite(.enabled(if: RegistryFixture.isAvailable && BusyboxRootfs.isAvailable && HostFacts.hasKVM, "needs docker-registry, skopeo, umoci, busybox-static and /dev/kvm"))
struct ConfigSettingsTests {
    /// Pushes the seeded busybox plus `upper` with the seeded config's settings changed by `change`.
    static func push(_ registry: RegistryFixture, upper: [UInt8], tag: String, _ change: (inout [String: Any]) -> Void) throws {
        let seeded = try registry.seededImage()
        var config = seeded.config
        var settings = config["config"] as? [String: Any] ?? [:]
        change(&settings)
        config["config"] = settings
        config["rootfs"] = ["type": "layers", "diff_ids": [seeded.diffID, Digest.of(upper).description]]
        let text = String(decoding: try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]), as: UTF8.self)
        try registry.pushLayered(upper: upper, tag: tag, configOverride: text)
    }

    @Test func containersStartInTheWorkingDirectoryAsTheUser() async throws {
        let registry = try RegistryFixture()
        let state = try HostFacts.makeTemporaryFolder("config-settings")
        defer { try? FileManager.default.removeItem(at: state) }
        let engine = try Engine(stateFolder: state, metricsFactory: NOOPMetricsHandler.instance)
        var upper = TarWriter()
        upper.add("etc/passwd", content: Array("root:x:0:0::/:/bin/sh\napp:x:1234:4321::/srv:/bin/sh\n".utf8))
        upper.add("etc/group", content: Array("root:x:0:\nstaff:x:50:\n".utf8))
        upper.add("srv/", .directory)
        let layer = upper.finished()
        try Self.push(registry, upper: layer, tag: "named") { $0["WorkingDir"] = "/srv"; $0["User"] = "app" }
        try Self.push(registry, upper: layer, tag: "numeric") { $0["WorkingDir"] = "/etc"; $0["User"] = "77:staff" }
        try Self.push(registry, upper: layer, tag: "nobody") { $0["User"] = "nobody" }
        _ = try await engine.pullImage(reference: registry.reference("named"), name: "named", by: "test")
        _ = try await engine.pullImage(reference: registry.reference("numeric"), name: "numeric", by: "test")
        _ = try await engine.pullImage(reference: registry.reference("nobody"), name: "nobody", by: "test")
        for (image, expected) in [("named", "/srv 1234 4321"), ("numeric", "/etc 77 50")] {
            var seen: [String] = []
            for arguments in [["pwd"], ["id", "-u"], ["id", "-g"]] {
                let result = try await engine.runContainer(ContainerSpec(image: image, arguments: arguments), by: "test")
                #expect(result.exitCode == 0, "\(image) \(arguments): \(result.stderr)")
                seen.append(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            #expect(seen.joined(separator: " ") == expected, "\(image)")
        }
        do {
            _ = try await engine.runContainer(ContainerSpec(image: "nobody", arguments: ["id", "-u"]), by: "test")
            Issue.record("an image whose User is not in its /etc/passwd ran")
        } catch let error as EngineError {
            #expect(error.message.contains("User \"nobody\" is not a number and not in the image's /etc/passwd"), "\(error.message)")
        }
        await engine.shutdown(grace: .milliseconds(100))
    }
}
