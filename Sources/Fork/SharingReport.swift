import HostSystem
import ProcessVM

/// Memory of a warm parent and its children as the kernel accounts it: the parent's memfd
/// (its allocated blocks); for each child, the pages it still shares with the parent and the
/// pages it owns (the page map of its guest mapping, /proc/self/pagemap);
/// for the family, what it costs against full copies; and the host kernel memory each VM
/// costs besides (KVM's vmalloc, slab, kernel stacks and page tables).
public struct SharingReport: Sendable {
    public struct Child: Sendable {
        public let name: String
        public let usage: MappingUsage
    }

    /// Bytes of the parent's memory, its memfd (what one full copy of it would cost).
    public let parentResident: Int
    public let children: [Child]
    /// Host kernel memory per VM, measured over the VMs the children run in.
    public let kernelPerVM: KernelMemory?

    /// Reads the kernel's accounting now for `containers` (not yet removed) of `parent`:
    /// the page map of their VMs' guest memory only, with `pageMap` (one reader serves every
    /// family of a report) or a reader of its own.
    /// `kernelBefore` is a `KernelMemory.current()` taken before the containers were forked.
    public static func measure(parent: WarmParent, containers: [Container], kernelBefore: KernelMemory? = nil,
                               pageMap: PageMap? = nil) throws(SystemError) -> SharingReport {
        let reader: PageMap
        if let pageMap { reader = pageMap } else { reader = try PageMap() }
        let kernelAfter = kernelBefore == nil ? nil : KernelMemory.current()
        // Every VM of each container: its first process's, and those of the processes it forked.
        var children: [Child] = []
        for container in containers {
            guard let first = container.processVM else { continue }
            children.append(Child(name: container.name, usage: try first.memory.usage(in: reader)))
            for vm in first.tree.runningVMs {
                children.append(Child(name: "\(container.name)/\(vm.processID)", usage: try vm.memory.usage(in: reader)))
            }
        }
        let parentResident = parent.forkPoint.memory.memfdBytes ?? 0
        let perVM = kernelBefore.flatMap { before in
            children.isEmpty ? nil : kernelAfter.map { ($0 - before).divided(by: children.count) }
        }
        return SharingReport(parentResident: parentResident, children: children, kernelPerVM: perVM)
    }

    public var ownedByChildren: Int { children.reduce(0) { $0 + $1.usage.privateBytes } }
    /// What parent and children cost as they are.
    public var familyCost: Int { parentResident + ownedByChildren }
    /// What they would cost if each child were a full copy of its parent.
    public var fullCopiesCost: Int { parentResident * (children.count + 1) + ownedByChildren }
    public var saved: Int { fullCopiesCost - familyCost }

    public func renderText() -> String {
        func kib(_ bytes: Int) -> String { "\(bytes / 1024) KiB" }
        var lines = ["sharing (kernel accounting: the parent's memfd, /proc/self/pagemap):",
                     "  parent memory \(kib(parentResident))"]
        let owned = children.map(\.usage.privateBytes).sorted()
        if !owned.isEmpty {
            let shared = children.map(\.usage.shared).sorted()
            lines.append("  per child: owns \(kib(owned[owned.count / 2])) median (\(kib(owned.first!))–\(kib(owned.last!))), "
                         + "shares \(kib(shared[shared.count / 2])) median with the parent")
        }
        if !children.isEmpty {
            lines.append("  family of \(children.count) children: \(kib(familyCost)) against \(kib(fullCopiesCost)) as full copies — \(kib(saved)) saved")
        }
        if let kernelPerVM {
            lines.append("  host kernel memory per VM: \(kib(kernelPerVM.total)) (vmalloc \(kib(kernelPerVM.vmalloc)), slab \(kib(kernelPerVM.slab)), "
                         + "kernel stacks \(kib(kernelPerVM.kernelStack)), page tables \(kib(kernelPerVM.pageTables)))")
        }
        return lines.joined(separator: "\n")
    }
}
