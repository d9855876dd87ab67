@testable import Engine
import Foundation
import Metrics
import TestSupport
import Synchronization
import Testing

/// Containers' log folders are made ahead and reused (`ContainerFolderPool`): a container
/// never sees what an earlier one wrote, removed containers' folders are gone under their
/// names, and a restarted engine takes over the ready folders the last one left. Runs'
/// folders (removed at their end) live on tmpfs (`ContainerFolders`) and go at shutdown.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"))
struct ContainerFolderTests {
    @Test func reusedLogFoldersNeverCarryAnEarlierContainersOutput() async throws {
        let state = try HostFacts.makeTemporaryFolder("engine-folders")
        let root = try BusyboxRootfs.make()
        defer {
            try? FileManager.default.removeItem(at: state)
            try? FileManager.default.removeItem(at: root)
        }
        let containers = state.appendingPathComponent("containers")
        let ready = try await runAndRemove(state: state, rootfs: root)

        // A later engine on the same containers folder (as a restarted daemon) empties and
        // takes over what the last one left, and its containers' output is again their own.
        // (Another state folder: the first engine's process-wide locks stay while it lives.)
        let leftBefore = ready.count
        let stray = containers.appendingPathComponent("\(try #require(ready.first))/stdout.log")
        try Data("stale output\n".utf8).write(to: stray)
        let secondState = try HostFacts.makeTemporaryFolder("engine-folders-2")
        defer { try? FileManager.default.removeItem(at: secondState) }
        let second = try Engine(stateFolder: secondState, metricsFactory: NOOPMetricsHandler.instance,
                                options: EngineOptions(containersFolder: containers))
        _ = try await second.addImage(ImageRecord(name: "busybox", rootfs: root.path, executable: "/bin/busybox"), by: "test")
        for round in 0..<4 {
            let kept = try await second.runContainer(ContainerSpec(image: "busybox", arguments: ["echo", "after \(round)"]), remove: false, by: "test")
            #expect(kept.stdout == "after \(round)\n")
            #expect(try String(contentsOf: containers.appendingPathComponent("\(kept.id)/stdout.log"), encoding: .utf8) == "after \(round)\n")
            try await second.removeContainer(kept.id, by: "test")
        }
        let after = try await settled(containers).filter { $0.hasPrefix(".ready-") }
        // At most the pool's target (64) and the folder a create held while the pool was filled.
        #expect(after.count >= min(leftBefore, 8) && after.count <= 65)
        await second.shutdown(grace: .milliseconds(100))
    }

    /// Runs containers on a first engine (runs, and kept ones it then removes); returns the
    /// kept containers' ready folders it left.
    private func runAndRemove(state: URL, rootfs: URL) async throws -> [String] {
        let containers = state.appendingPathComponent("containers")
        let first = try Engine(stateFolder: state, metricsFactory: NOOPMetricsHandler.instance)
        let runs = first.runsFolder
        _ = try await first.addImage(ImageRecord(name: "busybox", rootfs: rootfs.path, executable: "/bin/busybox"), by: "test")
        var removed: [String] = []
        for round in 0..<24 {
            // Long output in early rounds, short later: a reused file must not keep a tail.
            let text = round < 8 ? String(repeating: "long \(round) ", count: 200) : "short \(round)"
            var spec = ContainerSpec(image: "busybox", arguments: ["sh", "-c", "echo '\(text)'; echo 'err \(round)' >&2; cat"])
            if round % 3 == 0 { spec.stdin = "given \(round)\n" }
            // Every other one kept, then removed: its folder goes back to the kept containers' pool.
            let result = try await first.runContainer(spec, remove: round % 2 == 0, by: "test")
            let input = round % 3 == 0 ? "given \(round)\n" : ""
            #expect(result.stdout == "\(text)\n\(input)", "round \(round)")
            #expect(result.stderr == "err \(round)\n", "round \(round)")
            if round % 2 == 1 {
                #expect(FileManager.default.fileExists(atPath: containers.appendingPathComponent(result.id).path), "round \(round)")
                try await first.removeContainer(result.id, by: "test")
            }
            removed.append(result.id)
        }
        // Ids: 32 lowercase hex digits (128 random bits), all distinct.
        #expect(Set(removed).count == removed.count)
        #expect(removed.allSatisfy { $0.utf8.count == 32 && $0.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) } })
        // One kept: its folder holds its own files only, and its logs are its own.
        let kept = try await first.runContainer(ContainerSpec(image: "busybox", arguments: ["echo", "kept"]), remove: false, by: "test")
        let keptFiles = try FileManager.default.contentsOfDirectory(atPath: containers.appendingPathComponent(kept.id).path).sorted()
        #expect(keptFiles == ["stderr.log", "stderr.times", "stdout.log", "stdout.times"])
        #expect(try String(contentsOf: containers.appendingPathComponent("\(kept.id)/stdout.log"), encoding: .utf8) == "kept\n")

        // Removal finishes off the caller's path: wait for it, then look at both folders.
        for folder in [containers, runs] {
            let names = try await settled(folder)
            #expect(names.allSatisfy { !removed.contains($0) }, "a removed container's folder is still in \(folder.path)")
            let ready = names.filter { $0.hasPrefix(".ready-") }
            #expect(!ready.isEmpty && ready.count <= 65)
            for name in ready {
                let files = try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent(name).path)
                #expect(Set(files) == ["stderr.log", "stderr.times", "stdout.log", "stdout.times"], "\(name) holds \(files)")
                for file in files {
                    let size = try FileManager.default.attributesOfItem(atPath: folder.appendingPathComponent("\(name)/\(file)").path)[.size] as? Int
                    #expect(size == 0, "\(name)/\(file) is not empty")
                }
            }
        }
        let keptReady = try await settled(containers).filter { $0.hasPrefix(".ready-") }

        await first.shutdown(grace: .milliseconds(100))
        // The runs' folder was memory: nothing of it is left.
        #expect(!FileManager.default.fileExists(atPath: runs.path), "\(runs.path) is left after shutdown")
        return keptReady
    }

    /// Runs' log folders are on tmpfs, one folder per state folder, while kept containers'
    /// are in the state folder; a run's output is there while it runs and gone with it.
    @Test(.enabled(if: ContainerFolderTests.shmIsTmpfs, "needs /dev/shm on tmpfs"))
    func runsLogFoldersAreOnTmpfs() async throws {
        let state = try HostFacts.makeTemporaryFolder("engine-run-folders")
        let root = try BusyboxRootfs.make()
        defer {
            try? FileManager.default.removeItem(at: state)
            try? FileManager.default.removeItem(at: root)
        }
        let engine = try Engine(stateFolder: state, metricsFactory: NOOPMetricsHandler.instance)
        let runs = engine.runsFolder
        #expect(runs.path.hasPrefix("/dev/shm/vmfork-\(geteuid())/"))
        #expect(runs.deletingLastPathComponent().lastPathComponent == "vmfork-\(geteuid())")
        let other = try HostFacts.makeTemporaryFolder("engine-run-folders-2")
        defer { try? FileManager.default.removeItem(at: other) }
        // Named by the state folder: the same folder for the same path, another for another.
        let again = try #require(ContainerFolders.runsFolder(stateFolder: state).folder)
        #expect(again.path == runs.path)
        #expect(try #require(ContainerFolders.runsFolder(stateFolder: other).folder).path != runs.path)
        // A folder of nobody's but /dev/shm's own kind: not a tmpfs, so runs stay with the kept ones.
        #expect(ContainerFolders.runsFolder(stateFolder: state, shm: state.path).folder == nil)

        _ = try await engine.addImage(ImageRecord(name: "busybox", rootfs: root.path, executable: "/bin/busybox"), by: "test")
        let id = Mutex<String?>(nil)
        async let ran = engine.runContainer(ContainerSpec(image: "busybox", arguments: ["sh", "-c", "echo during; sleep 0.5"]), by: "test",
                                            started: { info in id.withLock { $0 = info.id } })
        // While it runs: its output is in a folder of the runs' folder that keeps its ready
        // name (no rename into place: nothing but the engine looks for it), not in the state folder.
        var holding: [String] = []
        for _ in 0..<40 where holding.isEmpty {
            try await Task.sleep(for: .milliseconds(10))
            holding = try FileManager.default.contentsOfDirectory(atPath: runs.path).filter {
                (try? String(contentsOfFile: runs.appendingPathComponent("\($0)/stdout.log").path, encoding: .utf8)) == "during\n"
            }
        }
        let runID = try #require(id.withLock { $0 })
        #expect(holding.count == 1 && holding.allSatisfy { $0.hasPrefix(".ready-d-") }, "\(holding)")
        #expect(!FileManager.default.fileExists(atPath: runs.appendingPathComponent(runID).path))
        #expect(!FileManager.default.fileExists(atPath: state.appendingPathComponent("containers/\(runID)").path))
        let result = try await ran
        #expect(result.stdout == "during\n")
        // Once it is removed, its folder is ready again under the same name, emptied.
        let names = try await settled(runs)
        #expect(!names.contains(result.id))
        if let folder = holding.first {
            #expect(names.contains(folder))
            #expect(try String(contentsOfFile: runs.appendingPathComponent("\(folder)/stdout.log").path, encoding: .utf8) == "")
        }
        await engine.shutdown(grace: .milliseconds(100))
        #expect(!FileManager.default.fileExists(atPath: runs.path))
    }

    /// The user's folder in /dev/shm is shared ground: a link there, or a folder others may
    /// enter, is refused (runs' logs then go with the kept ones), and the reason is named.
    @Test(.enabled(if: ContainerFolderTests.shmIsTmpfs, "needs /dev/shm on tmpfs"))
    func aRunsFolderOthersCouldReachIsRefused() throws {
        // A stand-in for /dev/shm, on the same tmpfs.
        let shm = "/dev/shm/vmfork-test-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: shm, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: shm) }
        let state = URL(fileURLWithPath: "/nonexistent-state")
        let base = "\(shm)/vmfork-\(geteuid())"
        let elsewhere = "\(shm)/elsewhere"
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        try FileManager.default.createSymbolicLink(atPath: base, withDestinationPath: elsewhere)
        let linked = ContainerFolders.runsFolder(stateFolder: state, shm: shm)
        #expect(linked.folder == nil && linked.whyNot == "\(base) is not a folder")
        try FileManager.default.removeItem(atPath: base)
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        let open = ContainerFolders.runsFolder(stateFolder: state, shm: shm)
        #expect(open.folder == nil && open.whyNot == "\(base) is not this user's alone")
        try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: base)
        #expect(ContainerFolders.runsFolder(stateFolder: state, shm: shm).folder?.deletingLastPathComponent().path == base)
        // Missing: made, this user's alone.
        try FileManager.default.removeItem(atPath: base)
        #expect(ContainerFolders.runsFolder(stateFolder: state, shm: shm).folder != nil)
        let mode = try FileManager.default.attributesOfItem(atPath: base)[.posixPermissions] as? Int
        #expect(mode == 0o700)
    }

    static let shmIsTmpfs = ContainerFolders.runsFolder(stateFolder: URL(fileURLWithPath: "/nonexistent-probe")).folder != nil

    /// The folder's entries once two looks 100 ms apart agree (at most 5 s).
    private func settled(_ folder: URL) async throws -> [String] {
        var last = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
        for _ in 0..<50 {
            try await Task.sleep(for: .milliseconds(100))
            let now = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
            if now == last { return now }
            last = now
        }
        return last
    }
}
