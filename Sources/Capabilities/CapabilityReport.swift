import CShims
import HostSystem
import IOEngine
import KVM

/// What this host offers the engine, probed once at start-up: KVM, io_uring and NUMA.
/// Each gap is kept as the named error that explains it, so `vmfork doctor` can print it and
/// the engine can refuse early with the same words.
public struct CapabilityReport: Sendable {
    public struct KVMStatus: Sendable {
        public var apiVersion: Int32
        public var kind: VirtualizationKind
        /// Every extension the engine needs, with whether KVM has it.
        public var extensions: [(name: String, present: Bool, why: String)]
        public var vcpuMmapSize: Int
        public var cpuidEntries: Int
    }

    public struct IOUringStatus: Sendable {
        public var opcodes: [(name: String, supported: Bool)]
    }

    public var kvm: Result<KVMStatus, KVMError>
    public var ioUring: Result<IOUringStatus, IOUringError>
    /// nil when the kernel has no NUMA support (then everything is one node).
    public var numa: NUMATopology?
    /// Why this process cannot track writes to guest memory (`WriteTracking`), or nil when it
    /// can: pooled VMs' restores then find a child's pages without a look at each mapped page.
    public var writeTracking: SystemError?

    public init(kvm: Result<KVMStatus, KVMError>, ioUring: Result<IOUringStatus, IOUringError>, numa: NUMATopology?,
                writeTracking: SystemError? = nil) {
        self.kvm = kvm
        self.ioUring = ioUring
        self.numa = numa
        self.writeTracking = writeTracking
    }

    /// Probes the host now. `kvmPath` is a parameter so tests can point it elsewhere.
    public static func probe(kvmPath: String = "/dev/kvm") -> CapabilityReport {
        CapabilityReport(kvm: probeKVM(path: kvmPath), ioUring: probeIOUring(), numa: NUMATopology.current(), writeTracking: WriteTracking.probe())
    }

    static func probeKVM(path: String) -> Result<KVMStatus, KVMError> {
        do throws(KVMError) {
            let system = try KVMSystem(path: path)
            let extensions = KVMExtension.required.map { ($0.name, system.checkExtension($0.number) != 0, $0.why) }
            let cpuid = try system.supportedCPUID()
            return .success(KVMStatus(apiVersion: system.apiVersion, kind: .detect(), extensions: extensions,
                                      vcpuMmapSize: system.vcpuMmapSize, cpuidEntries: cpuid.count))
        } catch {
            return .failure(error)
        }
    }

    static func probeIOUring() -> Result<IOUringStatus, IOUringError> {
        do throws(IOUringError) {
            let ring = try IOUring(entries: 8)
            let opcodes = try ring.supportedOpcodes()
            if let missing = opcodes.first(where: { !$0.supported }) {
                throw .missingOpcode(name: missing.name)
            }
            return .success(IOUringStatus(opcodes: opcodes))
        } catch {
            return .failure(error)
        }
    }

    /// The first error that stops the engine from running process VMs, if any.
    public var kvmProblem: KVMError? {
        switch kvm {
        case .failure(let error): return error
        case .success(let status):
            if let missing = status.extensions.first(where: { !$0.present }) {
                return .missingExtension(name: missing.name, why: missing.why)
            }
            return nil
        }
    }

    public var ioUringProblem: IOUringError? {
        if case .failure(let error) = ioUring { return error }
        return nil
    }

    /// True when every part the engine uses is present.
    public var isReady: Bool { kvmProblem == nil && ioUringProblem == nil }
}
