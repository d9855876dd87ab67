import API
import Engine
import Foundation

/// containers/create's body read without JSONDecoder (`QuickJSON`): the docker CLI's ~2 KB
/// object cost a VCH ~0.3 ms to decode with cold caches, on every `docker run`. This reader
/// gives up (nil) wherever it cannot be sure to read the body as `CreateBody`'s Decodable form
/// does, and the caller decodes it that way then, so its errors stay the decoder's.
extension CreateBody {
    static func quick(from body: Data) -> CreateBody? {
        guard let members = QuickJSON.parse(body)?.members else { return nil }
        var created = CreateBody()
        for member in members {
            let value = member.value
            // decodeIfPresent: null is absent; a value of another type throws (so: the decoder's turn).
            func absent() -> Bool { value == .null }
            switch member.key {
            case "Image": if !absent() { guard let text = value.string else { return nil }; created.Image = text }
            case "Hostname": if !absent() { guard let text = value.string else { return nil }; created.Hostname = text }
            case "Env": if !absent() { guard let items = value.strings else { return nil }; created.Env = items }
            case "Cmd": if !absent() { guard let items = value.strings else { return nil }; created.Cmd = items }
            case "Entrypoint": if !absent() { guard let items = value.strings else { return nil }; created.Entrypoint = items }
            case "Labels": if !absent() { guard let map = value.stringMap else { return nil }; created.Labels = map }
            case "Tty": if !absent() { guard let flag = value.boolean else { return nil }; created.Tty = flag }
            case "OpenStdin": if !absent() { guard let flag = value.boolean else { return nil }; created.OpenStdin = flag }
            case "StdinOnce": if !absent() { guard let flag = value.boolean else { return nil }; created.StdinOnce = flag }
            case "AttachStdin": if !absent() { guard let flag = value.boolean else { return nil }; created.AttachStdin = flag }
            case "HostConfig":
                if !absent() {
                    guard let host = HostConfigBody.quick(value) else { return nil }
                    created.HostConfig = host
                }
            default:
                if UnsupportedOptions.configFields.contains(member.key) {
                    guard let set = Self.isSet(value) else { return nil }
                    if set { created.refused.insert(member.key) }
                }
            }
        }
        return created
    }

    /// Whether a value says anything, as `JSONPresence` reads it (whatever type it has): nil for
    /// a number JSONDecoder would not read as a Double.
    static func isSet(_ value: QuickJSON.Node) -> Bool? {
        switch value {
        case .null: return false
        case .boolean(let flag): return flag
        case .number: return value.double.map { $0 != 0 }
        case .string(let text): return !text.isEmpty
        case .array(let items): return !items.isEmpty
        case .object(let members): return !members.isEmpty
        }
    }
}

extension CreateBody.HostConfigBody {
    static func quick(_ node: QuickJSON.Node) -> Self? {
        guard let members = node.members else { return nil }
        var host = Self()
        for member in members {
            let value = member.value
            switch member.key {
            case "Memory":
                if value != .null { guard let number = value.integer else { return nil }; host.Memory = number }
            case "AutoRemove":
                if value != .null { guard let flag = value.boolean else { return nil }; host.AutoRemove = flag }
            // These three are read with try?: a value of another type is as good as none.
            case "NetworkMode": host.NetworkMode = value.string
            case "RestartPolicy":
                if let policy = value.members {
                    let name = policy.first { $0.key == "Name" }?.value ?? .null
                    host.RestartPolicy = name == .null ? RestartPolicyBody(Name: nil) : name.string.map { RestartPolicyBody(Name: $0) }
                }
            case "MemorySwap":
                // A number that is not a plain integer: the decoder's turn (it may or may not read it).
                if case .number = value { guard let number = value.integer else { return nil }; host.MemorySwap = number }
            default:
                if UnsupportedOptions.hostConfigFields.contains(member.key) {
                    guard let set = CreateBody.isSet(value) else { return nil }
                    if set { host.refused.insert(member.key) }
                }
            }
        }
        return host
    }
}
