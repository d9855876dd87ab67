import Foundation

// The launch path's shapes read and written by `QuickJSON`: each reader accepts only what it
// reads whole and exactly as JSONDecoder would and gives nil for anything else, which the
// caller then hands to JSONDecoder (whose errors stay the API's).

extension ContainerSpec {
    /// A spec from its JSON object; nil when it needs the full decoder (no unknown field, no
    /// null, each of its type).
    public static func quick(_ node: QuickJSON.Node) -> ContainerSpec? {
        guard let members = node.members else { return nil }
        var spec = ContainerSpec(image: "")
        var hasImage = false
        for member in members {
            let value = member.value
            switch member.key {
            case "image": guard let text = value.string else { return nil }; spec.image = text; hasImage = true
            case "name": guard let text = value.string else { return nil }; spec.name = text
            case "hostname": guard let text = value.string else { return nil }; spec.hostname = text
            case "stdin": guard let text = value.string else { return nil }; spec.stdin = text
            case "pool": guard let text = value.string else { return nil }; spec.pool = text
            case "forkPoint": guard let point = value.string.flatMap(ForkPointName.init(rawValue:)) else { return nil }; spec.forkPoint = point
            case "arguments": guard let items = value.strings else { return nil }; spec.arguments = items
            case "entrypoint": guard let items = value.strings else { return nil }; spec.entrypoint = items
            case "cmd": guard let items = value.strings else { return nil }; spec.cmd = items
            case "environment": guard let items = value.strings else { return nil }; spec.environment = items
            case "memoryMiB": guard let number = value.integer else { return nil }; spec.memoryMiB = number
            case "memoryReservationMiB": guard let number = value.integer else { return nil }; spec.memoryReservationMiB = number
            case "labels": guard let map = value.stringMap else { return nil }; spec.labels = map
            case "openStdin": guard let flag = value.boolean else { return nil }; spec.openStdin = flag
            case "tty": guard let flag = value.boolean else { return nil }; spec.tty = flag
            default: return nil
            }
        }
        return hasImage ? spec : nil
    }

    /// The spec as the API's request body (the fields that are set).
    public func quickJSON() -> Data {
        var writer = QuickJSON.Writer()
        write(into: &writer)
        return Data(writer.bytes)
    }

    public func write(into writer: inout QuickJSON.Writer) {
        writer.beginObject()
        writer.key("image"); writer.string(image)
        if let name { writer.key("name"); writer.string(name) }
        if let arguments { writer.key("arguments"); writer.strings(arguments) }
        if let entrypoint { writer.key("entrypoint"); writer.strings(entrypoint) }
        if let cmd { writer.key("cmd"); writer.strings(cmd) }
        if let environment { writer.key("environment"); writer.strings(environment) }
        if let hostname { writer.key("hostname"); writer.string(hostname) }
        if let memoryMiB { writer.key("memoryMiB"); writer.integer(memoryMiB) }
        if let forkPoint { writer.key("forkPoint"); writer.string(forkPoint.rawValue) }
        if let labels { writer.key("labels"); writer.stringMap(labels) }
        if let openStdin { writer.key("openStdin"); writer.boolean(openStdin) }
        if let stdin { writer.key("stdin"); writer.string(stdin) }
        if let tty { writer.key("tty"); writer.boolean(tty) }
        if let pool { writer.key("pool"); writer.string(pool) }
        if let memoryReservationMiB { writer.key("memoryReservationMiB"); writer.integer(memoryReservationMiB) }
        writer.endObject()
    }
}

extension ContainerInfo {
    /// The fields `quick` reads; an answer with any other goes to JSONDecoder.
    private static let quickFields: Set<String> = [
        "id", "name", "image", "state", "exitCode", "exitReason", "arguments", "environment", "hostname", "memoryMiB", "forkPoint", "labels",
        "parent", "pool", "placementID", "createdAt", "startedAt", "finishedAt", "forkMicroseconds", "reusedVM", "argv0", "entrypoint", "cmd", "tty",
    ]

    /// A container as the agent answers it, by `QuickJSON`; nil when the answer needs
    /// JSONDecoder (a field this reader does not know, such as the memory figures).
    public static func quick(from body: Data) -> ContainerInfo? {
        QuickJSON.parse(body).flatMap(quick)
    }

    public static func quick(_ node: QuickJSON.Node) -> ContainerInfo? {
        guard let members = node.members else { return nil }
        var fields: [String: QuickJSON.Node] = [:]
        for member in members where member.value != .null { fields[member.key] = member.value }
        guard fields.keys.allSatisfy(quickFields.contains),
              let id = fields["id"]?.string, let name = fields["name"]?.string, let image = fields["image"]?.string,
              let state = fields["state"]?.string.flatMap(ContainerState.init(rawValue:)), let arguments = fields["arguments"]?.strings,
              let environment = fields["environment"]?.strings, let hostname = fields["hostname"]?.string,
              let memoryMiB = fields["memoryMiB"]?.integer, let forkPoint = fields["forkPoint"]?.string.flatMap(ForkPointName.init(rawValue:)),
              let labels = fields["labels"]?.stringMap, let parent = fields["parent"]?.string, let createdAt = fields["createdAt"]?.double
        else { return nil }
        // An optional field present must be of its type.
        func optional<T>(_ key: String, _ read: (QuickJSON.Node) -> T?) -> T?? {
            guard let node = fields[key] else { return .some(nil) }
            guard let value = read(node) else { return nil }
            return .some(value)
        }
        guard let exitCode = optional("exitCode", \.integer), let exitReason = optional("exitReason", \.string),
              let pool = optional("pool", \.string), let placementID = optional("placementID", \.integer),
              let startedAt = optional("startedAt", \.double), let finishedAt = optional("finishedAt", \.double),
              let forkMicroseconds = optional("forkMicroseconds", \.double), let reusedVM = optional("reusedVM", \.boolean),
              let argv0 = optional("argv0", \.string), let entrypoint = optional("entrypoint", \.strings), let cmd = optional("cmd", \.strings),
              let tty = optional("tty", \.boolean)
        else { return nil }
        return ContainerInfo(id: id, name: name, image: image, state: state, exitCode: exitCode, exitReason: exitReason, arguments: arguments,
                             environment: environment, hostname: hostname, memoryMiB: memoryMiB, forkPoint: forkPoint, labels: labels,
                             parent: parent, pool: pool, placementID: placementID, createdAt: createdAt, startedAt: startedAt,
                             finishedAt: finishedAt, forkMicroseconds: forkMicroseconds, reusedVM: reusedVM, memory: nil,
                             argv0: argv0, entrypoint: entrypoint, cmd: cmd, tty: tty)
    }

    /// The container as `quick` reads it; false (nothing written) when it has what only the
    /// Codable form carries (its memory figures) or a figure that is not finite.
    public func write(into writer: inout QuickJSON.Writer) -> Bool {
        guard memory == nil, createdAt.isFinite else { return false }
        for figure in [startedAt, finishedAt, forkMicroseconds] {
            if let figure, !figure.isFinite { return false }
        }
        writer.beginObject()
        writer.key("id"); writer.string(id)
        writer.key("name"); writer.string(name)
        writer.key("image"); writer.string(image)
        writer.key("state"); writer.string(state.rawValue)
        if let exitCode { writer.key("exitCode"); writer.integer(exitCode) }
        if let exitReason { writer.key("exitReason"); writer.string(exitReason) }
        writer.key("arguments"); writer.strings(arguments)
        writer.key("environment"); writer.strings(environment)
        writer.key("hostname"); writer.string(hostname)
        writer.key("memoryMiB"); writer.integer(memoryMiB)
        writer.key("forkPoint"); writer.string(forkPoint.rawValue)
        writer.key("labels"); writer.stringMap(labels)
        writer.key("parent"); writer.string(parent)
        if let pool { writer.key("pool"); writer.string(pool) }
        if let placementID { writer.key("placementID"); writer.integer(placementID) }
        writer.key("createdAt"); writer.double(createdAt)
        if let startedAt { writer.key("startedAt"); writer.double(startedAt) }
        if let finishedAt { writer.key("finishedAt"); writer.double(finishedAt) }
        if let forkMicroseconds { writer.key("forkMicroseconds"); writer.double(forkMicroseconds) }
        if let reusedVM { writer.key("reusedVM"); writer.boolean(reusedVM) }
        if let argv0 { writer.key("argv0"); writer.string(argv0) }
        if let entrypoint { writer.key("entrypoint"); writer.strings(entrypoint) }
        if let cmd { writer.key("cmd"); writer.strings(cmd) }
        if let tty { writer.key("tty"); writer.boolean(tty) }
        writer.endObject()
        return true
    }
}

extension ExitInfo {
    /// How a container ended, as the agent's wait answers (output in base64, as JSONEncoder's
    /// default writes Data); nil when the answer needs JSONDecoder.
    public static func quick(from body: Data) -> ExitInfo? {
        guard let members = QuickJSON.parse(body)?.members else { return nil }
        var exit = ExitInfo(exitCode: 0, reason: "")
        var (hasCode, hasReason) = (false, false)
        for member in members where member.value != .null {
            let value = member.value
            switch member.key {
            case "exitCode": guard let code = value.integer else { return nil }; exit.exitCode = code; hasCode = true
            case "reason": guard let text = value.string else { return nil }; exit.reason = text; hasReason = true
            case "stdout": guard let data = value.string.flatMap({ Data(base64Encoded: $0) }) else { return nil }; exit.stdout = data
            case "stderr": guard let data = value.string.flatMap({ Data(base64Encoded: $0) }) else { return nil }; exit.stderr = data
            case "removed": guard let flag = value.boolean else { return nil }; exit.removed = flag
            default: return nil
            }
        }
        return hasCode && hasReason ? exit : nil
    }
}

extension RunResult {
    /// A run's answer as the agent writes it (`POST /v1/containers/run`); nil when the answer
    /// needs JSONDecoder (a member it does not know, or one of another type).
    public static func quick(from body: Data) -> RunResult? {
        guard let members = QuickJSON.parse(body)?.members else { return nil }
        var result = RunResult(id: "", exitCode: 0, reason: "", stdout: "", stderr: "")
        var seen = 0
        for member in members where member.value != .null {
            let value = member.value
            switch member.key {
            case "id": guard let text = value.string else { return nil }; result.id = text; seen |= 1
            case "exitCode": guard let code = value.integer else { return nil }; result.exitCode = code; seen |= 2
            case "reason": guard let text = value.string else { return nil }; result.reason = text; seen |= 4
            case "stdout": guard let text = value.string else { return nil }; result.stdout = text; seen |= 8
            case "stderr": guard let text = value.string else { return nil }; result.stderr = text; seen |= 16
            case "forkMicroseconds": guard let figure = value.double else { return nil }; result.forkMicroseconds = figure
            case "startedAt": guard let figure = value.double else { return nil }; result.startedAt = figure
            case "finishedAt": guard let figure = value.double else { return nil }; result.finishedAt = figure
            default: return nil
            }
        }
        return seen == 31 ? result : nil
    }
}

extension RunResult {
    /// The JSON the API answers a run with (the same fields and values as the Codable form,
    /// sorted by name); nil when a figure is not finite (the Codable form refuses it).
    public func quickBytes() -> [UInt8]? {
        for figure in [forkMicroseconds, startedAt, finishedAt] {
            if let figure, !figure.isFinite { return nil }
        }
        var writer = QuickJSON.Writer(capacity: 160 + stdout.utf8.count + stderr.utf8.count + reason.utf8.count)
        writer.beginObject()
        writer.key("exitCode"); writer.integer(exitCode)
        if let finishedAt { writer.key("finishedAt"); writer.double(finishedAt) }
        if let forkMicroseconds { writer.key("forkMicroseconds"); writer.double(forkMicroseconds) }
        writer.key("id"); writer.string(id)
        writer.key("reason"); writer.string(reason)
        if let startedAt { writer.key("startedAt"); writer.double(startedAt) }
        writer.key("stderr"); writer.string(stderr)
        writer.key("stdout"); writer.string(stdout)
        writer.endObject()
        return writer.bytes
    }
}
