import Engine
import Foundation
@testable import Images
import Metrics
import TestSupport
import Testing

/// Pulls from a real registry (docker-registry on loopback) through the engine, and runs
/// what was pulled as a container when the machine has KVM.
@Suite(.enabled(if: RegistryFixture.isAvailable && BusyboxRootfs.isAvailable, "needs docker-registry, skopeo, umoci (scripts/setup.sh) and busybox-static"))
struct RegistryPullTests {
    /// A fresh engine on a temporary state folder.
    private func engine() throws -> (Engine, URL) {
        let state = try HostFacts.makeTemporaryFolder("pull-state")
        return (try Engine(stateFolder: state, metricsFactory: NOOPMetricsHandler.instance), state)
    }

    /// The datastore holds no root folder and no temporary file (a failed pull left nothing behind).
    private func datastoreIsClean(_ engine: Engine) -> Bool {
        let rootfs = (try? FileManager.default.contentsOfDirectory(atPath: engine.imageDatastore.appendingPathComponent("rootfs").path)) ?? []
        let tmp = (try? FileManager.default.contentsOfDirectory(atPath: engine.imageDatastore.appendingPathComponent("tmp").path)) ?? []
        return rootfs.isEmpty && tmp.isEmpty
    }

    private func expectRefused(_ engine: Engine, _ reference: String, _ expected: String, credentials: RegistryCredentials? = nil,
                               kind: EngineError.Kind = .invalid, sourceLocation: SourceLocation = #_sourceLocation) async {
        do {
            _ = try await engine.pullImage(reference: reference, credentials: credentials, by: "test")
            Issue.record("pulled \(reference); expected a refusal with \"\(expected)\"", sourceLocation: sourceLocation)
        } catch let error as EngineError {
            #expect(error.message.contains(expected) && error.kind == kind, "\(error.kind): \(error.message)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("not an EngineError: \(error)", sourceLocation: sourceLocation)
        }
        #expect(engine.images().isEmpty, "the image store changed", sourceLocation: sourceLocation)
        #expect(datastoreIsClean(engine), "a failed pull left files in the datastore", sourceLocation: sourceLocation)
    }

    @Test func pullsBusyboxRunsItAndCollectsItsBlobsOnceRemoved() async throws {
        let registry = try RegistryFixture()
        let (engine, state) = try engine()
        defer { try? FileManager.default.removeItem(at: state) }
        let image = try await engine.pullImage(reference: registry.reference("latest"), by: "test")
        #expect(image.name == "busybox" && image.executable == "/bin/busybox" && image.arguments == ["sh"])
        #expect(image.environment == ["PATH=/bin", "GREETING=hello"])
        let pulled = try #require(image.pulled)
        #expect(pulled.entrypoint == ["/bin/busybox"] && pulled.cmd == ["sh"] && pulled.workingDir == "/" && pulled.user == "0:0")
        #expect(image.rootfs.hasPrefix(engine.imageDatastore.path + "/rootfs/" + pulled.manifestDigest.hex))
        #expect(try engine.image("busybox").pulled == pulled)
        #expect(FileManager.default.contentsEqual(atPath: image.rootfs + "/bin/busybox", andPath: "/bin/busybox"))
        if HostFacts.hasKVM {
            let result = try await engine.runContainer(ContainerSpec(image: "busybox", arguments: ["echo", "hi"]), by: "test")
            #expect(result.stdout == "hi\n" && result.exitCode == 0)
            let hostname = try await engine.runContainer(ContainerSpec(image: "busybox", arguments: ["cat", "/etc/hostname"]), by: "test")
            #expect(hostname.stdout == "vmfork-registry-image\n")
        }
        // A second name for the same content shares its root folder and downloads nothing.
        let gets = registry.blobGets(pulled.layers[0])
        let again = try await engine.pullImage(reference: registry.reference("latest"), name: "bb2", by: "test")
        #expect(again.rootfs == image.rootfs && registry.blobGets(pulled.layers[0]) == gets)
        // Names are unique; the store is as it was after a refused pull.
        await #expect(throws: EngineError.self) { _ = try await engine.pullImage(reference: registry.reference("latest"), by: "test") }

        try await engine.removeImage("busybox", by: "test")
        var report = try await engine.collectImageGarbage(by: "test")
        #expect(report.blobsRemoved == 0 && report.rootfsRemoved == 0, "bb2 still uses them")
        try await engine.removeImage("bb2", by: "test")
        report = try await engine.collectImageGarbage(by: "test")
        #expect(report.rootfsRemoved == 1 && report.blobsRemoved == 3 && report.bytesFreed > 1_000_000)
        #expect(engine.imagePullerBlobCount == 0 && !FileManager.default.fileExists(atPath: image.rootfs))
        await engine.shutdown(grace: .milliseconds(100))
    }

    @Test func aLayeredImageThroughAnIndexHonoursWhiteoutsAndPicksLinuxAmd64() async throws {
        let registry = try RegistryFixture()
        let (engine, state) = try engine()
        defer { try? FileManager.default.removeItem(at: state) }
        var upper = TarWriter()
        upper.add("bin/.wh.ls")
        upper.add("etc/motd", content: Array("pulled in layers\n".utf8))
        let manifest = try registry.pushLayered(upper: upper.finished(), tag: "layered")
        let manifestDigest = Digest.of(Array(manifest.utf8))
        let index = """
            {"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[\
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\(manifestDigest)","size":\(manifest.utf8.count),"platform":{"architecture":"arm64","os":"linux"}},\
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\(manifestDigest)","size":\(manifest.utf8.count),"platform":{"architecture":"amd64","os":"linux"}}]}
            """
        try registry.pushManifest(index, tag: "multi", mediaType: "application/vnd.oci.image.index.v1+json")
        let image = try await engine.pullImage(reference: registry.reference("multi"), name: "layered", by: "test")
        #expect(image.pulled?.manifestDigest == manifestDigest && image.pulled?.layers.count == 2)
        #expect(!FileManager.default.fileExists(atPath: image.rootfs + "/bin/ls") && FileManager.default.fileExists(atPath: image.rootfs + "/bin/cat"))
        if HostFacts.hasKVM {
            let result = try await engine.runContainer(ContainerSpec(image: "layered", arguments: ["cat", "/etc/motd"]), by: "test")
            #expect(result.stdout == "pulled in layers\n")
        }
        // An index without linux/amd64 is refused by name.
        let armOnly = index.replacingOccurrences(of: "\"amd64\"", with: "\"s390x\"")
        try registry.pushManifest(armOnly, tag: "arm", mediaType: "application/vnd.oci.image.index.v1+json")
        do {
            _ = try await engine.pullImage(reference: registry.reference("arm"), name: "arm", by: "test")
            Issue.record("pulled an index without linux/amd64")
        } catch let error as EngineError {
            #expect(error.message.contains("no linux/amd64 manifest in the index (it offers linux/arm64, linux/s390x)"), "\(error)")
        }
        await engine.shutdown(grace: .milliseconds(100))
    }

    @Test func aBlobWhoseDigestDoesNotMatchIsRefusedAndTheNextPullResumes() async throws {
        let registry = try RegistryFixture()
        let (engine, state) = try engine()
        defer { try? FileManager.default.removeItem(at: state) }
        var upper = TarWriter()
        upper.add("etc/motd", content: Array("second layer\n".utf8))
        let layer = upper.finished()
        try registry.pushLayered(upper: layer, tag: "two")
        let upperDigest = Digest.of(layer)
        // The registry's copy of the upper layer goes bad (same size, one byte flipped).
        let stored = registry.storedBlob(upperDigest)
        var corrupt = Array(try Data(contentsOf: stored))
        corrupt[100] ^= 0xFF
        try Data(corrupt).write(to: stored)
        await expectRefused(engine, registry.reference("two"), "layer \(upperDigest.short) of \(registry.reference("two")): digest mismatch, expected \(upperDigest)")
        // The lower layer finished before the failure: it stays in the blob store.
        let lower = Digest(unchecked: (try registry.seededImage().layer["digest"] as! String).dropFirst(7).description)
        let blob = engine.imageDatastore.appendingPathComponent("blobs/sha256/" + lower.hex)
        var before = stat()
        #expect(stat(blob.path, &before) == 0, "the finished blob was kept")
        let lowerGets = registry.blobGets(lower)
        // Repaired, the pull resumes: the lower layer is not fetched again.
        try Data(layer).write(to: stored)
        let image = try await engine.pullImage(reference: registry.reference("two"), name: "two", by: "test")
        var after = stat()
        stat(blob.path, &after)
        #expect(after.st_ino == before.st_ino && registry.blobGets(lower) == lowerGets)
        #expect((try? String(contentsOfFile: image.rootfs + "/etc/motd", encoding: .utf8)) == "second layer\n")
        await engine.shutdown(grace: .milliseconds(100))
    }

    @Test func manifestsAndConfigsThatLieOrAreMalformedAreRefused() async throws {
        let registry = try RegistryFixture()
        let (engine, state) = try engine()
        defer { try? FileManager.default.removeItem(at: state) }
        var upper = TarWriter()
        upper.add("etc/motd", content: Array("x\n".utf8))
        let layer = upper.finished()
        let digest = Digest.of(layer)
        try registry.pushLayered(upper: layer, tag: "short", upperSizeDelta: -10)
        await expectRefused(engine, registry.reference("short"), "layer \(digest.short) of \(registry.reference("short")): the registry sent more than the \(layer.count - 10) bytes the manifest declares")
        try registry.pushLayered(upper: layer, tag: "long", upperSizeDelta: 10)
        await expectRefused(engine, registry.reference("long"), "the registry sent \(layer.count) bytes but the manifest declares \(layer.count + 10)")
        try registry.pushLayered(upper: layer, tag: "garbage", configOverride: #"{"rootfs": 5}"#)
        await expectRefused(engine, registry.reference("garbage"), "not valid JSON of the expected shape")
        try registry.pushLayered(upper: layer, tag: "fewer", configOverride: #"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#)
        await expectRefused(engine, registry.reference("fewer"), "lists 0 diff_ids for the manifest's 2 layers")
        let wrongDiff = #"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/busybox"]},"rootfs":{"type":"layers","diff_ids":["# + "\"\(try registry.seededImage().diffID)\",\"sha256:" + String(repeating: "0", count: 64) + "\"]}}"
        try registry.pushLayered(upper: layer, tag: "wrongdiff", configOverride: wrongDiff)
        await expectRefused(engine, registry.reference("wrongdiff"), "uncompressed (diff_id): digest mismatch")
        // The registry checks that a manifest's blobs exist, not what they are: zstd layers that
        // are cut short or corrupt are refused by what is wrong with them.
        let compressed = try Self.zstd(layer)
        try registry.pushLayered(upper: layer, tag: "zstdshort", upperBlob: Array(compressed.dropLast(7)), upperMediaType: "application/vnd.oci.image.layer.v1.tar+zstd")
        await expectRefused(engine, registry.reference("zstdshort"), "the zstd stream is truncated")
        var corrupt = compressed
        for index in 12..<min(40, corrupt.count - 4) { corrupt[index] ^= 0x5A }
        try registry.pushLayered(upper: layer, tag: "zstdbad", upperBlob: corrupt, upperMediaType: "application/vnd.oci.image.layer.v1.tar+zstd")
        await expectRefused(engine, registry.reference("zstdbad"), "not a valid zstd stream")
        try registry.pushLayered(upper: layer, tag: "noprogram", configOverride: #"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["# + "\"\(try registry.seededImage().diffID)\",\"\(digest)\"]}}")
        do {
            _ = try await engine.pullImage(reference: registry.reference("noprogram"), by: "test")
            Issue.record("an image without a program was registered")
        } catch let error as EngineError {
            #expect(error.message.contains("names no entrypoint or cmd"), "\(error)")
        }
        #expect(engine.images().isEmpty)
        await expectRefused(engine, registry.reference("absent"), "has no manifest", kind: .notFound)
        await expectRefused(engine, "127.0.0.1:\(registry.port)/Bad..Name", "image reference", kind: .invalid)
        await engine.shutdown(grace: .milliseconds(100))
    }

    /// `bytes` compressed by the zstd tool (two frames, as `zstd` writes for concatenated input).
    static func zstd(_ bytes: [UInt8], frames: Int = 1) throws -> [UInt8] {
        let folder = try HostFacts.makeTemporaryFolder("zstd")
        defer { try? FileManager.default.removeItem(at: folder) }
        var out: [UInt8] = []
        let half = frames == 1 ? bytes.count : bytes.count / 2
        for (index, piece) in [bytes[..<half], bytes[half...]].enumerated() where !piece.isEmpty || index == 0 {
            let input = folder.appendingPathComponent("in\(index)")
            try Data(piece).write(to: input)
            let result = try HostFacts.run("/usr/bin/zstd", ["-q", "-19", "-f", input.path, "-o", input.path + ".zst"])
            #expect(result.status == 0, "zstd: \(result.stderr)")
            out += try Array(Data(contentsOf: URL(fileURLWithPath: input.path + ".zst")))
        }
        return out
    }

    /// A zstd layer (OCI's tar+zstd, two frames) pulls as its gzip form would: its files are in
    /// the image and a container reads them; the diff_id is checked on the decoded tar.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/zstd"), "needs the zstd tool"))
    func aZstdLayerPullsAndItsFilesAreThere() async throws {
        let registry = try RegistryFixture()
        let (engine, state) = try engine()
        defer { try? FileManager.default.removeItem(at: state) }
        var upper = TarWriter()
        upper.add("etc/motd", content: Array("from a zstd layer\n".utf8))
        upper.add("srv/", .directory)
        let big = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        upper.add("srv/big", content: big)
        let layer = upper.finished()
        let compressed = try Self.zstd(layer, frames: 2)
        #expect(compressed.starts(with: [0x28, 0xB5, 0x2F, 0xFD]) && compressed.count < layer.count)
        try registry.pushLayered(upper: layer, tag: "zstd", upperBlob: compressed, upperMediaType: "application/vnd.oci.image.layer.v1.tar+zstd")
        _ = try await engine.pullImage(reference: registry.reference("zstd"), name: "zstd", by: "test")
        let motd = try await engine.runContainer(ContainerSpec(image: "zstd", arguments: ["cat", "/etc/motd"]), by: "test")
        #expect(motd.exitCode == 0 && motd.stdout == "from a zstd layer\n", "\(motd.stderr)")
        let sum = try await engine.runContainer(ContainerSpec(image: "zstd", arguments: ["sha256sum", "/srv/big"]), by: "test")
        #expect(sum.stdout.hasPrefix(Digest.of(big).description.dropFirst("sha256:".count)), "\(sum.stdout) \(sum.stderr)")
        await engine.shutdown(grace: .milliseconds(100))
    }

    @Test func aHostileLayerFromTheRegistryLeavesTheStoreAsItWas() async throws {
        let registry = try RegistryFixture()
        let (engine, state) = try engine()
        defer { try? FileManager.default.removeItem(at: state) }
        var upper = TarWriter()
        upper.add("../../escaped", content: Array("x".utf8))
        try registry.pushLayered(upper: upper.finished(), tag: "hostile")
        await expectRefused(engine, registry.reference("hostile"), "entry \"../../escaped\": path \"../../escaped\" contains '..'")
        #expect(!FileManager.default.fileExists(atPath: engine.imageDatastore.deletingLastPathComponent().appendingPathComponent("escaped").path))
        await engine.shutdown(grace: .milliseconds(100))
    }

    @Test func basicAuthIsAnsweredWithTheCredentialsGiven() async throws {
        let credentials = RegistryCredentials(username: "alice", password: "s3cret-pw")
        let registry = try RegistryFixture(credentials: credentials)
        let (engine, state) = try engine()
        defer { try? FileManager.default.removeItem(at: state) }
        await expectRefused(engine, registry.reference("latest"), "requires a user name and password (basic auth); none were given", kind: .notFound)
        await expectRefused(engine, registry.reference("latest"), "refused access", credentials: RegistryCredentials(username: "alice", password: "wrong"),
                            kind: .notFound)
        let image = try await engine.pullImage(reference: registry.reference("latest"), credentials: credentials, by: "test")
        #expect(image.executable == "/bin/busybox")
        await engine.shutdown(grace: .milliseconds(100))
    }

    @Test func bearerTokensAreFetchedFromTheChallengesRealm() async throws {
        let credentials = RegistryCredentials(username: "bob", password: "token-pw")
        let registry = try RegistryFixture(credentials: credentials, bearer: true)
        let (engine, state) = try engine()
        defer { try? FileManager.default.removeItem(at: state) }
        await expectRefused(engine, registry.reference("latest"), "refused a token (HTTP 401)", kind: .notFound)
        let image = try await engine.pullImage(reference: registry.reference("latest"), credentials: credentials, by: "test")
        #expect(image.executable == "/bin/busybox" && image.pulled?.layers.count == 1)
        await engine.shutdown(grace: .milliseconds(100))
    }
}

extension Engine {
    /// Blobs in the datastore (for the collection test).
    var imagePullerBlobCount: Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: imageDatastore.appendingPathComponent("blobs/sha256").path)) ?? []).count
    }
}
