/// Text and JSON renderings of the probe, for `vmfork doctor`.
extension CapabilityReport {
    public func renderText() -> String {
        var lines: [String] = []
        switch kvm {
        case .success(let status):
            lines.append("KVM          ok: /dev/kvm API \(status.apiVersion), \(status.kind.rawValue)")
            for ext in status.extensions {
                lines.append("  \(ext.present ? "ok  " : "MISSING") \(ext.name): \(ext.why)")
            }
            lines.append("  vCPU run area \(status.vcpuMmapSize) bytes, \(status.cpuidEntries) CPUID leaves")
            if status.kind == .pvm {
                lines.append("  note: guest kernel-mode code is emulated here, so guests run kernel-less (process VMs)")
            }
        case .failure(let error):
            lines.append("KVM          FAILED: \(error)")
        }
        switch ioUring {
        case .success(let status):
            lines.append("io_uring     ok: " + status.opcodes.map { "\($0.name) \($0.supported ? "yes" : "no")" }.joined(separator: ", "))
        case .failure(let error):
            lines.append("io_uring     FAILED: \(error)")
        }
        if let numa {
            lines.append("NUMA         \(numa.nodes.count) node(s)")
            for node in numa.nodes {
                lines.append("  node \(node.id): CPUs \(Self.ranges(node.cpus)), memory \(node.memoryBytes >> 20) MiB (\(node.freeBytes >> 20) MiB free)")
            }
        } else {
            lines.append("NUMA         not supported by this kernel: placement treats the host as one node")
        }
        if let failure = writeTracking {
            lines.append("memory       no write tracking (\(failure)): pooled VMs' restores look at each page they map")
        } else {
            lines.append("memory       ok: write tracking (userfaultfd, asynchronous write protection) for pooled VMs' restores")
        }
        lines.append(isReady ? "ready: yes" : "ready: no")
        return lines.joined(separator: "\n")
    }

    /// A JSON object (hand-built so the report has a stable key order).
    public func renderJSON() -> String {
        func quote(_ s: String) -> String {
            var out = "\""
            for scalar in s.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                default:
                    if scalar.value < 0x20 { out += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count) + String(scalar.value, radix: 16) }
                    else { out.unicodeScalars.append(scalar) }
                }
            }
            return out + "\""
        }
        var kvmPart: String
        switch kvm {
        case .success(let s):
            let exts = s.extensions.map { "{\"name\":\(quote($0.name)),\"present\":\($0.present)}" }.joined(separator: ",")
            kvmPart = "{\"ok\":\(kvmProblem == nil),\"apiVersion\":\(s.apiVersion),\"kind\":\(quote(s.kind.rawValue)),\"extensions\":[\(exts)]}"
        case .failure(let e):
            kvmPart = "{\"ok\":false,\"error\":\(quote(e.description))}"
        }
        var uringPart: String
        switch ioUring {
        case .success(let s):
            let ops = s.opcodes.map { "{\"name\":\(quote($0.name)),\"supported\":\($0.supported)}" }.joined(separator: ",")
            uringPart = "{\"ok\":true,\"opcodes\":[\(ops)]}"
        case .failure(let e):
            uringPart = "{\"ok\":false,\"error\":\(quote(e.description))}"
        }
        let numaPart = numa.map { topo in
            "[" + topo.nodes.map { "{\"id\":\($0.id),\"cpus\":\($0.cpus),\"memoryBytes\":\($0.memoryBytes),\"freeBytes\":\($0.freeBytes)}" }.joined(separator: ",") + "]"
        } ?? "null"
        let trackingPart = writeTracking.map { "{\"ok\":false,\"error\":\(quote($0.description))}" } ?? "{\"ok\":true}"
        return "{\"kvm\":\(kvmPart),\"ioUring\":\(uringPart),\"numa\":\(numaPart),\"writeTracking\":\(trackingPart),\"ready\":\(isReady)}"
    }

    /// "0-3,8" style CPU lists.
    static func ranges(_ cpus: [Int]) -> String {
        var parts: [String] = []
        var index = 0
        while index < cpus.count {
            var end = index
            while end + 1 < cpus.count && cpus[end + 1] == cpus[end] + 1 { end += 1 }
            parts.append(end == index ? "\(cpus[index])" : "\(cpus[index])-\(cpus[end])")
            index = end + 1
        }
        return parts.isEmpty ? "none" : parts.joined(separator: ",")
    }
}
