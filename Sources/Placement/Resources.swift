/// The two resources pools and hosts account for: memory in KiB (a fork's private pages are
/// counted in KiB) and CPU in MHz (as vSphere pools count it).
public struct Resources: Hashable, Sendable, Codable, CustomStringConvertible {
    public var memoryKiB: Int
    public var cpuMHz: Int

    public init(memoryKiB: Int, cpuMHz: Int) {
        self.memoryKiB = memoryKiB
        self.cpuMHz = cpuMHz
    }

    public static let zero = Resources(memoryKiB: 0, cpuMHz: 0)

    public static func + (a: Resources, b: Resources) -> Resources {
        Resources(memoryKiB: a.memoryKiB + b.memoryKiB, cpuMHz: a.cpuMHz + b.cpuMHz)
    }

    public static func - (a: Resources, b: Resources) -> Resources {
        Resources(memoryKiB: a.memoryKiB - b.memoryKiB, cpuMHz: a.cpuMHz - b.cpuMHz)
    }

    public static func += (a: inout Resources, b: Resources) { a = a + b }
    public static func -= (a: inout Resources, b: Resources) { a = a - b }

    /// Componentwise maximum: what a pool takes from its parent is the larger of its
    /// reservation and what it holds, per resource.
    static func max(_ a: Resources, _ b: Resources) -> Resources {
        Resources(memoryKiB: Swift.max(a.memoryKiB, b.memoryKiB), cpuMHz: Swift.max(a.cpuMHz, b.cpuMHz))
    }

    var isZero: Bool { memoryKiB == 0 && cpuMHz == 0 }

    public var description: String { "\(Resources.formatKiB(memoryKiB)) memory, \(cpuMHz) MHz CPU" }

    /// A memory amount for people: KiB, MiB, GiB or TiB with one decimal where it helps.
    public static func formatKiB(_ kib: Int) -> String {
        let magnitude = abs(kib)
        if magnitude >= 1 << 30 { return formatScaled(Double(kib) / Double(1 << 30), "TiB") }
        if magnitude >= 1 << 20 { return formatScaled(Double(kib) / Double(1 << 20), "GiB") }
        if magnitude >= 1 << 10 { return formatScaled(Double(kib) / Double(1 << 10), "MiB") }
        return "\(kib) KiB"
    }

    private static func formatScaled(_ value: Double, _ unit: String) -> String {
        let rounded = (value * 10).rounded() / 10
        return rounded == rounded.rounded() ? "\(Int(rounded)) \(unit)" : "\(rounded) \(unit)"
    }
}

/// One of the two accounted resources, for naming which one ran out.
public enum ResourceKind: String, Sendable, Codable, CaseIterable {
    case memory, cpu

    func amount(_ resources: Resources) -> Int {
        self == .memory ? resources.memoryKiB : resources.cpuMHz
    }

    func format(_ amount: Int) -> String {
        self == .memory ? Resources.formatKiB(amount) : "\(amount) MHz"
    }
}
