import Foundation

// The Docker Engine API's JSON shapes the VCH reads and writes, with Docker's field names.
// Only the fields the docker CLI reads are written; see DockerTranslation for the mapping.

/// The body of `POST /containers/create` (the fields the VCH honours), read in one pass with
/// what `UnsupportedOptions` checks: which of the refused fields say something, and the few
/// host settings allowed only with some values. (It was parsed twice, once with
/// JSONSerialization for the check: a quarter of a millisecond of each `docker run`.)
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
    /// The refused Config fields that are set.
    var refused: Set<String> = []

    struct HostConfigBody: Decodable {
        var Memory: Int?
        var AutoRemove: Bool?
        var NetworkMode: String?
        var RestartPolicy: RestartPolicyBody?
        var MemorySwap: Int?
        /// The refused HostConfig fields that are set.
        var refused: Set<String> = []

        struct RestartPolicyBody: Decodable { var Name: String? }

        init() {}

        init(from decoder: any Decoder) throws {
            let fields = try decoder.container(keyedBy: AnyKey.self)
            Memory = try fields.decodeIfPresent(Int.self, forKey: AnyKey("Memory"))
            AutoRemove = try fields.decodeIfPresent(Bool.self, forKey: AnyKey("AutoRemove"))
            NetworkMode = try? fields.decodeIfPresent(String.self, forKey: AnyKey("NetworkMode"))
            RestartPolicy = try? fields.decodeIfPresent(RestartPolicyBody.self, forKey: AnyKey("RestartPolicy"))
            MemorySwap = try? fields.decodeIfPresent(Int.self, forKey: AnyKey("MemorySwap"))
            refused = try JSONPresence.setFields(of: fields, among: UnsupportedOptions.hostConfigFields)
        }
    }

    init() {}

    init(from decoder: any Decoder) throws {
        let fields = try decoder.container(keyedBy: AnyKey.self)
        func field<T: Decodable>(_ name: String, _ type: T.Type) throws -> T? { try fields.decodeIfPresent(type, forKey: AnyKey(name)) }
        Image = try field("Image", String.self)
        Hostname = try field("Hostname", String.self)
        Env = try field("Env", [String].self)
        Cmd = try field("Cmd", [String].self)
        Entrypoint = try field("Entrypoint", [String].self)
        Labels = try field("Labels", [String: String].self)
        Tty = try field("Tty", Bool.self)
        OpenStdin = try field("OpenStdin", Bool.self)
        StdinOnce = try field("StdinOnce", Bool.self)
        AttachStdin = try field("AttachStdin", Bool.self)
        HostConfig = try field("HostConfig", HostConfigBody.self)
        refused = try JSONPresence.setFields(of: fields, among: UnsupportedOptions.configFields)
    }
}

/// Any JSON object key.
struct AnyKey: CodingKey {
    let stringValue: String
    var intValue: Int? { nil }
    init(_ name: String) { stringValue = name }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// Whether a JSON value says anything: not null, "", 0, false, [] or {} (any other value,
/// however nested, does).
struct JSONPresence: Decodable {
    /// A field's JSON type in the Docker API.
    enum Kind { case string, number, bool, array, object }

    let isSet: Bool

    /// Any value, its type unknown: each type tried in turn (a failed try throws and costs;
    /// only for a field whose value is not of its documented type).
    init(from decoder: any Decoder) throws {
        let value = try decoder.singleValueContainer()
        if value.decodeNil() {
            isSet = false
        } else if let object = try? decoder.container(keyedBy: AnyKey.self) {
            isSet = !object.allKeys.isEmpty
        } else if let list = try? decoder.unkeyedContainer() {
            isSet = !list.isAtEnd
        } else if let flag = try? value.decode(Bool.self) {
            isSet = flag
        } else if let number = try? value.decode(Double.self) {
            isSet = number != 0
        } else {
            isSet = !(try value.decode(String.self)).isEmpty
        }
    }

    /// Which of `names` are present in `fields` and set, each read as its `kinds` type.
    static func setFields(of fields: KeyedDecodingContainer<AnyKey>, among names: Set<String>) throws -> Set<String> {
        var set: Set<String> = []
        for key in fields.allKeys where names.contains(key.stringValue) {
            if try isSet(key, in: fields) { set.insert(key.stringValue) }
        }
        return set
    }

    private static func isSet(_ key: AnyKey, in fields: KeyedDecodingContainer<AnyKey>) throws -> Bool {
        if try fields.decodeNil(forKey: key) { return false }
        switch UnsupportedOptions.kinds[key.stringValue] {
        case .string?: if let text = try? fields.decode(String.self, forKey: key) { return !text.isEmpty }
        case .number?: if let number = try? fields.decode(Double.self, forKey: key) { return number != 0 }
        case .bool?: if let flag = try? fields.decode(Bool.self, forKey: key) { return flag }
        case .array?: if let list = try? fields.nestedUnkeyedContainer(forKey: key) { return !list.isAtEnd }
        case .object?: if let object = try? fields.nestedContainer(keyedBy: AnyKey.self, forKey: key) { return !object.allKeys.isEmpty }
        case nil: break
        }
        return try fields.decode(JSONPresence.self, forKey: key).isSet
    }
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
