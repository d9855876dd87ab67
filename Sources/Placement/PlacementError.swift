/// Why a request or a change was refused. Every case names the pool, image, host or value at
/// fault, and a refused call changes nothing.
public enum PlacementError: Error, Equatable, Sendable, CustomStringConvertible {
    case unknownPool(String)
    case unknownImage(String)
    case unknownHost(String)
    case unknownPlacement(Int)
    case duplicateName(kind: String, name: String)
    case negativeValue(subject: String, what: String, value: Int)
    case reservationAboveLimit(pool: String, resource: ResourceKind, reservation: Int, limit: Int)
    case limitBelowHeld(pool: String, resource: ResourceKind, limit: Int, held: Int)
    case poolCycle([String])
    case poolRefused(PoolRefusal)
    case noHostFits(image: String, pool: String, needed: Resources)
    case invalid(String)

    public var description: String {
        switch self {
        case .unknownPool(let name): "unknown pool \(name)"
        case .unknownImage(let name): "unknown image \(name)"
        case .unknownHost(let name): "unknown host \(name)"
        case .unknownPlacement(let id): "unknown placement \(id) (never reserved, or already released)"
        case .duplicateName(let kind, let name): "\(kind) \(name) already exists"
        case .negativeValue(let subject, let what, let value): "\(subject): \(what) \(value) is negative"
        case .reservationAboveLimit(let pool, let resource, let reservation, let limit):
            "pool \(pool): \(resource.rawValue) reservation \(resource.format(reservation)) is above its limit \(resource.format(limit))"
        case .limitBelowHeld(let pool, let resource, let limit, let held):
            "pool \(pool): \(resource.rawValue) limit \(resource.format(limit)) is below the \(resource.format(held)) it already holds"
        case .poolCycle(let path): "pool cycle: \(path.joined(separator: " -> "))"
        case .poolRefused(let refusal): refusal.description
        case .noHostFits(let image, let pool, let needed):
            "no healthy host has room for a fork of \(image) in pool \(pool) (needs \(needed))"
        case .invalid(let message): message
        }
    }
}

/// Pool admission's refusal: which pool said no, for which resource, and how much was missing.
public struct PoolRefusal: Equatable, Sendable, CustomStringConvertible {
    public enum Reason: String, Sendable {
        /// The pool's limit caps what it may hold.
        case limit
        /// The pool's reservation is used up and it may not borrow (not expandable).
        case reservationUsedUp
        /// The root pool (the fleet's healthy capacity) has nothing unreserved left.
        case fleetFull
    }

    /// The pool the request was made in.
    public let requestPool: String
    /// The pool that refused: the request pool or an ancestor it tried to borrow from.
    public let refusingPool: String
    public let resource: ResourceKind
    public let reason: Reason
    public let needed: Int
    public let available: Int

    public var description: String {
        let amounts = "needs \(resource.format(needed)), \(resource.format(available)) available"
        let what: String = switch reason {
        case .limit: "pool \(refusingPool) at its \(resource.rawValue) limit"
        case .reservationUsedUp: "pool \(refusingPool) has used up its \(resource.rawValue) reservation and is not expandable"
        case .fleetFull: "the fleet (root pool) has no unreserved \(resource.rawValue) left"
        }
        return refusingPool == requestPool ? "\(what) (\(amounts))" : "pool \(requestPool) cannot borrow: \(what) (\(amounts))"
    }
}
