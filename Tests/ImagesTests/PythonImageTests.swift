import Engine
import Foundation
import Images
import Metrics
import TestSupport
import Testing

/// A python3 image from a real registry (this host's python3 pushed by
/// scripts/local-registry.sh --python as two layers): pulled by the engine as the daemon runs
/// it (containers served from the image's layer disks), its containers run `python3 -c`
/// scripts whose output and exit status must be what the same scripts give natively on the
/// host, with the same interpreter and standard library.
@Suite(.enabled(if: RegistryFixture.isAvailable && BusyboxRootfs.isAvailable && HostFacts.hasKVM && DynamicRootfs.isAvailable && DynamicRootfs.python != nil,
                "needs /dev/kvm, docker-registry, skopeo, umoci, busybox-static, ldd and python3 (scripts/setup.sh)"))
struct PythonImageTests {
    static let environment = ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"]

    static let jsonRoundTrip = #"""
        import json
        doc = {"name": "vmfork", "layers": [1, 2, {"nested": None, "ok": True}], "ratio": 0.25, "text": "tab\tquote\" snow \u2603"}
        text = json.dumps(doc, sort_keys=True)
        back = json.loads(text)
        print(text)
        print(back == doc, json.dumps(back, indent=1, sort_keys=True) == json.dumps(doc, indent=1, sort_keys=True))
        """#

    static let hashes = #"""
        import hashlib, zlib
        data = bytes(range(256)) * 400
        print(hashlib.sha256(data).hexdigest())
        print(hashlib.sha1(b"vmfork").hexdigest(), hashlib.md5(b"vmfork").hexdigest())
        print(hashlib.blake2b(b"vmfork", digest_size=16).hexdigest())
        packed = zlib.compress(data, 9)
        print(len(packed), zlib.crc32(packed), zlib.decompress(packed) == data)
        """#

    /// The json package's sources (the package the test removes from the unpacked folder, so
    /// the guest reads them from the layer disks), with their sizes.
    static let listing = #"""
        import os, sys
        lib = os.path.dirname(os.__file__)
        print(sys.executable, lib)
        for name in sorted(os.listdir(lib + "/json")):
            if name.endswith(".py"):
                print(name, os.stat(lib + "/json/" + name).st_size)
        print(sum(1 for name in os.listdir(lib + "/encodings") if name.endswith(".py")))
        """#

    static let exitStatus = #"""
        import sys
        print("leaving with 3")
        sys.exit(3)
        """#

    static let traceback = #"""
        import collections
        counts = collections.Counter("abracadabra")
        print(sorted(counts.items()), flush=True)
        print(1 / (counts["a"] - 5))
        """#

    @Test func aPulledPythonImageRunsScriptsAsNatively() async throws {
        let python = try #require(DynamicRootfs.python)
        let library = "/usr/lib/" + URL(fileURLWithPath: python).lastPathComponent
        let registry = try RegistryFixture(python: true)
        let state = try HostFacts.makeTemporaryFolder("pull-python")
        defer { try? FileManager.default.removeItem(at: state) }
        let engine = try Engine(stateFolder: state, metricsFactory: NOOPMetricsHandler.instance, rootfsFromLayerDisks: true)
        let image = try await engine.pullImage(reference: registry.reference("latest", repository: "python3"), name: "py", by: "test")
        #expect(image.executable == python && image.arguments.isEmpty, "\(image)")
        #expect(image.environment == Self.environment)
        #expect(image.pulled?.layers.count == 2 && image.pulled?.layerDisks?.count == 2, "\(String(describing: image.pulled))")
        // The unpacked folder loses the json package: the containers read it from the disks.
        try FileManager.default.removeItem(atPath: image.rootfs + library + "/json")

        for (what, script) in [("json", Self.jsonRoundTrip), ("hashes", Self.hashes), ("listing", Self.listing),
                               ("exit status", Self.exitStatus), ("traceback", Self.traceback)] {
            let host = try HostFacts.run("/usr/bin/env", ["-i"] + Self.environment + [python, "-c", script])
            let guest = try await engine.runContainer(ContainerSpec(image: "py", arguments: ["-c", script], memoryMiB: 256), by: "test")
            #expect(guest.exitCode == Int(host.status), "\(what): \(guest.exitCode) in the container, \(host.status) natively; \(guest.stderr)")
            #expect(guest.stdout == host.stdout, "\(what)")
            #expect(guest.stderr == host.stderr, "\(what)")
            #expect(!host.stdout.isEmpty, "\(what): \(host.stderr)")
        }
        // What the scripts give is what was asked of them, not only the same on both sides.
        let exit = try await engine.runContainer(ContainerSpec(image: "py", arguments: ["-c", Self.exitStatus], memoryMiB: 256), by: "test")
        #expect(exit.exitCode == 3 && exit.stdout == "leaving with 3\n", "\(exit)")
        let failed = try await engine.runContainer(ContainerSpec(image: "py", arguments: ["-c", Self.traceback], memoryMiB: 256), by: "test")
        #expect(failed.exitCode == 1 && failed.stderr.hasSuffix("ZeroDivisionError: division by zero\n"), "\(failed)")
        // The image's own files, not the host's: its hostname file and its root folder.
        let own = try await engine.runContainer(ContainerSpec(image: "py", arguments: ["-c", "import os; print(open('/etc/hostname').read().strip(), sorted(os.listdir('/bin')))"],
                                                              memoryMiB: 256), by: "test")
        #expect(own.stdout == "vmfork-python-image ['busybox', 'cat', 'echo', 'ls', 'sh']\n" && own.exitCode == 0, "\(own)")
        await engine.shutdown(grace: .milliseconds(100))
    }
}
