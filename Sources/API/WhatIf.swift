import Foundation
import Hummingbird
import Placement
import WorkloadProfiles

/// The capacity report's "what if": the runway of one pool if `rate` launches a second of
/// one image went into it, each living `lifetime` seconds (forever when absent). Query
/// parameters whatIfRate, whatIfPool, whatIfImage, whatIfLifetime of GET /v1/placement/capacity.
struct WhatIf {
    let rate: Double
    let pool: String
    let image: String
    let lifetime: Double?

    /// nil when the request asks no "what if"; throws naming the parameter at fault.
    init?(_ request: Request) throws {
        guard let rate = try request.double("whatIfRate", in: 0.001...1_000_000) else {
            for name in ["whatIfPool", "whatIfImage", "whatIfLifetime"] where request.uri.queryParameters[Substring(name)] != nil {
                throw APIError.invalid("\(name) needs whatIfRate", field: "whatIfRate")
            }
            return nil
        }
        guard let pool = try request.string("whatIfPool", maxLength: 128), !pool.isEmpty else {
            throw APIError.invalid("whatIfRate needs whatIfPool, the pool the launches go into", field: "whatIfPool")
        }
        guard let image = try request.string("whatIfImage", maxLength: 128), !image.isEmpty else {
            throw APIError.invalid("whatIfRate needs whatIfImage, the image launched", field: "whatIfImage")
        }
        self.rate = rate
        self.pool = pool
        self.image = image
        self.lifetime = try request.double("whatIfLifetime", in: 0.001...1e9)
    }

    /// A workload profile of this one launch flow, for the planner's runway.
    func profile(_ core: borrowing PlacementCore) throws -> WorkloadProfile {
        _ = try core.pool(pool)
        _ = try core.image(image)
        var entry: [String: Any] = ["image": image, "pool": pool, "weight": 1.0, "command": [String]()]
        if let lifetime { entry["lifetimeSeconds"] = lifetime }
        let object: [String: Any] = [
            "version": 1, "name": "what-if", "fleet": ["simulated": true, "hostGroups": [Any]()], "pools": [Any](), "images": [Any](),
            "launchMix": ["launchesPerSecond": rate, "entries": [entry]],
        ]
        return try JSONDecoder().decode(WorkloadProfile.self, from: JSONSerialization.data(withJSONObject: object))
    }
}
