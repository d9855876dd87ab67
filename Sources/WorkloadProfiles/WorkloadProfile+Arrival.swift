/// The parts of a launch mix only load runs read: arrival pattern, ramp-up, duration, and
/// each entry's standard input and expected exit status.
extension WorkloadProfile.LaunchMix {
    public enum ArrivalPattern: String, Sendable, CaseIterable {
        case constant, poisson, burst
    }

    /// The arrival pattern (constant when the profile names none).
    public var arrivalPattern: ArrivalPattern { arrival.flatMap(ArrivalPattern.init(rawValue:)) ?? .constant }
}

extension WorkloadProfile {
    func validateArrival(_ mix: LaunchMix, _ fail: (String) -> WorkloadProfileError) throws {
        if let arrival = mix.arrival, LaunchMix.ArrivalPattern(rawValue: arrival) == nil {
            throw fail("launch mix: arrival \(arrival) is not constant, poisson or burst")
        }
        if let size = mix.burstSize {
            guard size >= 1 else { throw fail("launch mix: burstSize must be at least 1") }
            guard mix.arrivalPattern == .burst else { throw fail("launch mix: burstSize is given but arrival is not burst") }
        } else if mix.arrivalPattern == .burst {
            throw fail("launch mix: arrival burst needs burstSize")
        }
        if let ramp = mix.rampUpSeconds, !(ramp >= 0 && ramp.isFinite) { throw fail("launch mix: rampUpSeconds must be zero or positive") }
        if let duration = mix.durationSeconds, !(duration > 0 && duration.isFinite) { throw fail("launch mix: durationSeconds must be positive") }
        if let ramp = mix.rampUpSeconds, let duration = mix.durationSeconds, ramp > duration {
            throw fail("launch mix: rampUpSeconds \(ramp) is longer than durationSeconds \(duration)")
        }
        for entry in mix.entries {
            if let stdin = entry.stdin, stdin.utf8.count > 1 << 20 { throw fail("launch mix: stdin of \(entry.image) is over 1 MiB") }
            if let status = entry.expectedExitStatus, !(0...255).contains(status) {
                throw fail("launch mix: expectedExitStatus \(status) of \(entry.image) is not 0-255")
            }
            guard !entry.command.isEmpty else { throw fail("launch mix: command of \(entry.image) is empty") }
        }
    }
}
