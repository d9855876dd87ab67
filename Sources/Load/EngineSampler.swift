import API
import Engine
import Foundation
import HostSystem
import Synchronization

/// Samples the engine's own accounting while a run goes: its warm-parent families' memory
/// (GET /v1/parents?sharing=true: what the kernel says children own and share) and pool
/// misses, and the daemon's CPU time from /proc when its process is known (a Unix socket
/// tells who is on the other end).
final class EngineSampler: Sendable {
    let client: AgentClient
    let daemonPID: pid_t?
    let recorder: LoadRecorder
    private let samples = Mutex<[LoadReport.MemorySample]>([])
    private let stopped = Atomic<Bool>(false)
    private let done = DispatchSemaphore(value: 0)

    init(client: AgentClient, daemonPID: pid_t?, recorder: LoadRecorder) {
        self.client = client
        self.daemonPID = daemonPID
        self.recorder = recorder
    }

    /// One sample now; nil when the agent did not answer.
    func sample() -> LoadReport.MemorySample? {
        guard let response = try? client.send("GET", "/v1/parents?sharing=true"), response.status == 200,
              let parents = try? response.decode([ParentInfo].self) else { return nil }
        var sample = LoadReport.MemorySample(atSeconds: recorder.seconds(.now), children: 0, privateBytes: 0, sharedBytes: 0, parentBytes: 0,
                                             poolMisses: 0, readyVMs: 0, engineCPUSeconds: daemonPID.flatMap(CPUTime.ofProcess),
                                             privatePerChildByImage: [:])
        for parent in parents {
            sample.poolMisses += parent.poolMisses
            sample.readyVMs += parent.readyVMsNow
            guard let sharing = parent.sharing else { continue }
            sample.children += sharing.children
            sample.privateBytes += sharing.familyBytes - sharing.parentBytes
            sample.sharedBytes += sharing.childSharedBytesMedian * sharing.children
            sample.parentBytes += sharing.parentBytes
            if sharing.children > 0 {
                sample.privatePerChildByImage[parent.policy.image] = max(sample.privatePerChildByImage[parent.policy.image] ?? 0, sharing.childPrivateBytesMedian)
            }
        }
        return sample
    }

    /// Samples every `interval` seconds on a thread of its own until `stop`.
    func start(interval: Double) {
        LaunchLoop.spawn { [self] in
            while !stopped.load(ordering: .relaxed) {
                if let sample = sample() { samples.withLock { $0.append(sample) } }
                LaunchLoop.sleep(until: .now + .milliseconds(Int64(interval * 1000)))
            }
            done.signal()
        }
    }

    /// Stops sampling and returns the samples, with a last one taken now.
    func stop() -> [LoadReport.MemorySample] {
        stopped.store(true, ordering: .relaxed)
        done.wait()
        if let last = sample() { samples.withLock { $0.append(last) } }
        return samples.withLock { $0 }
    }

    /// The process on the other end of a Unix socket (SO_PEERCRED), or nil.
    static func peerPID(socketPath: String) -> pid_t? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(socketPath.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        // unsafe: the path is shorter than sun_path (checked above), so the copy and its NUL fit.
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        // unsafe: sockaddr_un begins with the sockaddr header, and connect reads the length given.
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { return nil }
        // struct ucred is pid, uid, gid (three 32-bit fields); Glibc hides its name without _GNU_SOURCE.
        var credentials: [Int32] = [0, 0, 0]
        var length = socklen_t(12)
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0, credentials[0] > 0 else { return nil }
        return credentials[0]
    }
}
