/// Why a fork would land where it would: the pool's admission, the chosen node, and a
/// verdict for every host ("host-7: no warm parent of nginx"). Built by looking at every
/// host, so it is for people and logs, not for the decision path.
public struct PlacementExplanation: Sendable, CustomStringConvertible {
    public struct Verdict: Sendable, Equatable {
        public let host: String
        /// nil when the host could take the fork.
        public let rejection: String?
        public let text: String
    }

    public let pool: String
    public let image: String
    /// The node the fork would go to, or the error that placement would throw.
    public let outcome: Result<(host: String, node: Int, start: Placement.Start, charge: Resources), PlacementError>
    /// The chosen host first, then the hosts that fit in the order the policy ranks them,
    /// then the rejected ones in host order.
    public let verdicts: [Verdict]

    /// The first `count` verdicts, and how many more were rejected for each reason.
    public func render(hosts count: Int = 12) -> String {
        var lines: [String] = []
        switch outcome {
        case .success(let choice):
            lines.append("fork of \(image) in pool \(pool): \(choice.host) node \(choice.node), \(choice.start.rawValue), charged \(choice.charge)")
        case .failure(let error):
            lines.append("fork of \(image) in pool \(pool): refused: \(error)")
        }
        lines += verdicts.prefix(count).map { "  \($0.text)" }
        let rest = verdicts.dropFirst(count)
        if !rest.isEmpty {
            var reasons: [String: Int] = [:]
            for verdict in rest { reasons[verdict.rejection ?? "fits, ranked lower", default: 0] += 1 }
            let summary = reasons.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }
                .map { "\($0.value) \($0.key)" }.joined(separator: "; ")
            lines.append("  ... \(rest.count) more hosts: \(summary)")
        }
        return lines.joined(separator: "\n")
    }

    public var description: String { render() }
}

extension PlacementCore {
    /// Explains the decision `reserve` would make now, without making it.
    public func explain(pool: String, image: String, allowColdStart: Bool = true) throws(PlacementError) -> PlacementExplanation {
        let p = try pools.index(of: pool)
        let i = try index(ofImage: image)
        let spec = images[i]
        let policy = pools.specs[p].policy
        let outcome: Result<(host: String, node: Int, start: Placement.Start, charge: Resources), PlacementError>
        var chosenHost = -1
        do {
            let decision = try decide(pool: p, image: i, allowColdStart: allowColdStart)
            chosenHost = Self.host(ofKey: decision.key)
            outcome = .success((hosts[chosenHost].name, Self.node(ofKey: decision.key), decision.start, decision.charge))
        } catch {
            outcome = .failure(error)
        }
        let warmRefusal = pools.refusal(charging: spec.warmCharge, at: p)
        var chosen: [PlacementExplanation.Verdict] = []
        var fitting: [(key: UInt64, verdict: PlacementExplanation.Verdict)] = []
        var rejected: [PlacementExplanation.Verdict] = []
        for (h, host) in hosts.enumerated() {
            func reject(_ reason: String, _ detail: String = "") {
                rejected.append(.init(host: host.name, rejection: reason, text: "\(host.name): \(reason)\(detail)"))
            }
            guard host.healthy else { reject("unhealthy"); continue }
            guard let n = warmNode(host: h, image: i) else {
                reject("no warm parent of \(image)", allowColdStart ? " (a cold start needs \(Resources.formatKiB(spec.coldCharge.memoryKiB)))" : "")
                continue
            }
            let free = nodeFree[nodeBase[h] + n]
            guard free >= spec.warmCharge.memoryKiB else {
                reject("node memory short", ": node \(n) has \(Resources.formatKiB(free)) free, a fork needs \(Resources.formatKiB(spec.warmCharge.memoryKiB))")
                continue
            }
            guard cpuFree[h] >= spec.warmCharge.cpuMHz else {
                reject("CPU short", ": \(cpuFree[h]) MHz free, a fork needs \(spec.warmCharge.cpuMHz) MHz")
                continue
            }
            if let warmRefusal { reject(warmRefusal.description); continue }
            let summary = "warm parent on node \(n), \(Resources.formatKiB(free)) free there, \(cpuFree[h]) MHz CPU free"
            if h == chosenHost {
                chosen.append(.init(host: host.name, rejection: nil, text: "\(host.name): chosen (\(policy.rawValue)): \(summary)"))
            } else {
                fitting.append((Self.key(free: free, host: h, node: n), .init(host: host.name, rejection: nil, text: "\(host.name): fits, ranked lower: \(summary)")))
            }
        }
        if chosenHost >= 0, chosen.isEmpty {
            let name = hosts[chosenHost].name
            chosen.append(.init(host: name, rejection: nil, text: "\(name): chosen for a cold start (\(policy.rawValue))"))
            rejected.removeAll { $0.host == name }
        }
        fitting.sort { policy == .spread ? $0.key > $1.key : $0.key < $1.key }
        return PlacementExplanation(pool: pool, image: image, outcome: outcome, verdicts: chosen + fitting.map(\.verdict) + rejected)
    }
}
