import Foundation

// The Docker Engine API's JSON shapes the VCH reads and writes, with Docker's field names.
// Only the fields the docker CLI reads are written; see DockerTranslation for the mapping.

/// The body of `POST /containers/create` (the fields the VCH honours; others are checked by
/// `UnsupportedOptions`).
struct CreateBody: Decodable {
    var Image: String?
    var Hostname: String?
    var Env: [String]?
    var Cmd: [String]?
    var Entrypoint: [String]?
    var Labels: [String: String]?
    var Tty: Bool?
    var OpenStdin: Bool?
    var StdinOnce: Bool?
    var AttachStdin: Bool?
    var HostConfig: HostConfigBody?

    struct HostConfigBody: Decodable {
        var Memory: Int?
        var AutoRemove: Bool?
    }
}

struct CreateAnswer: Encodable {
    let Id: String
    let Warnings: [String]
}

struct WaitAnswer: Encodable {
    struct WaitError: Encodable { let Message: String }
    let StatusCode: Int
    let Error: WaitError?
}

/// One row of `GET /containers/json`.
struct ContainerSummary: Encodable {
    struct NetworkSettings: Encodable { let Networks: [String: String] }
    struct HostConfigSummary: Encodable { let NetworkMode: String }
    let Id: String
    let Names: [String]
    let Image: String
    let ImageID: String
    let Command: String
    let Created: Int
    let Ports: [String]
    let Labels: [String: String]
    let State: String
    let Status: String
    let HostConfig: HostConfigSummary
    let NetworkSettings: NetworkSettings
    let Mounts: [String]
}

/// `GET /containers/{id}/json`.
struct ContainerInspect: Encodable {
    struct State: Encodable {
        let Status: String
        let Running: Bool
        let Paused: Bool
        let Restarting: Bool
        let OOMKilled: Bool
        let Dead: Bool
        let Pid: Int
        let ExitCode: Int
        let Error: String
        let StartedAt: String
        let FinishedAt: String
    }
    struct Config: Encodable {
        let Hostname: String
        let Domainname: String
        let User: String
        let AttachStdin: Bool
        let AttachStdout: Bool
        let AttachStderr: Bool
        let Tty: Bool
        let OpenStdin: Bool
        let StdinOnce: Bool
        let Env: [String]
        let Cmd: [String]?
        let Image: String
        let WorkingDir: String
        let Entrypoint: [String]?
        let Labels: [String: String]
    }
    struct HostConfig: Encodable {
        let Memory: Int
        let AutoRemove: Bool
        let NetworkMode: String
        let RestartPolicy: [String: String]
    }
    struct NetworkSettings: Encodable { let Networks: [String: String] }
    /// Not Docker's: where the container runs, as the host agent reports it.
    struct VMFork: Encodable {
        let Pool: String?
        let PlacementID: Int?
        let Parent: String
        let ForkMicroseconds: Double?
        let ExitReason: String?
        /// While it runs: bytes it owns and bytes it still shares with its warm parent (null
        /// once it has ended: always present, so that templates can test them).
        let MemoryPrivateBytes: Int?
        let MemorySharedBytes: Int?

        enum CodingKeys: CodingKey { case Pool, PlacementID, Parent, ForkMicroseconds, ExitReason, MemoryPrivateBytes, MemorySharedBytes }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encodeIfPresent(Pool, forKey: .Pool)
            try container.encodeIfPresent(PlacementID, forKey: .PlacementID)
            try container.encode(Parent, forKey: .Parent)
            try container.encodeIfPresent(ForkMicroseconds, forKey: .ForkMicroseconds)
            try container.encodeIfPresent(ExitReason, forKey: .ExitReason)
            try container.encode(MemoryPrivateBytes, forKey: .MemoryPrivateBytes)
            try container.encode(MemorySharedBytes, forKey: .MemorySharedBytes)
        }
    }
    let Id: String
    let Created: String
    let Path: String
    let Args: [String]
    let State: State
    let Image: String
    let Name: String
    let RestartCount: Int
    let Driver: String
    let Platform: String
    let HostConfig: HostConfig
    let Config: Config
    let NetworkSettings: NetworkSettings
    let Mounts: [String]
    let VMFork: VMFork
}

/// One row of `GET /images/json`.
struct ImageSummary: Encodable {
    let Id: String
    let ParentId: String
    let RepoTags: [String]
    let RepoDigests: [String]
    let Created: Int
    let Size: Int
    let SharedSize: Int
    let Labels: [String: String]
    let Containers: Int
}

/// `GET /images/{name}/json`.
struct ImageInspect: Encodable {
    struct Config: Encodable {
        let Cmd: [String]?
        let Entrypoint: [String]?
        let Env: [String]
        var WorkingDir = ""
        var User = ""
        var Labels: [String: String]? = nil
        var ExposedPorts: [String: [String: String]]? = nil
        var StopSignal: String? = nil
    }
    struct RootFS: Encodable { let `Type`: String }
    let Id: String
    let RepoTags: [String]
    let RepoDigests: [String]
    let Created: String
    let Os: String
    let Architecture: String
    let Size: Int
    let Config: Config
    let RootFS: RootFS
}

/// One object of the `GET /events` stream.
struct DockerEvent: Encodable {
    struct Actor: Encodable {
        let ID: String
        let Attributes: [String: String]
    }
    let status: String?
    let id: String?
    let from: String?
    let `Type`: String
    let Action: String
    let Actor: Actor
    let scope: String
    let time: Int
    let timeNano: Int
}
