import Foundation

/// One frame off a worker socket: its bytes and, when `QuickJSON` reads them, their tree
/// (the hot messages — create, its reply, a container's exit — are read from the tree; the
/// others go to JSONDecoder on the bytes, as before).
struct WorkerFrame: Sendable {
    let data: Data
    let tree: QuickJSON.Node?

    init(_ data: Data) {
        self.data = data
        tree = QuickJSON.parse(data)
    }

    /// A member of the frame's top-level object.
    func member(_ key: String) -> QuickJSON.Node? {
        tree?.members?.first(where: { $0.key == key })?.value
    }

    /// The header: the request's or reply's id (0 for an event), the op of a request, the
    /// event's name; nil when the frame is not a message.
    var header: WorkerHeader? {
        if tree != nil {
            guard let id = member("id")?.integer, id >= 0 else { return nil }
            return WorkerHeader(id: UInt64(id), op: member("op")?.string, event: member("event")?.string)
        }
        return try? JSONDecoder().decode(WorkerHeader.self, from: data)
    }
}

/// The hot messages written by hand (`QuickJSON.Writer`): the same JSON the Codable forms
/// give, without Foundation's encoder on a path whose budget is tens of microseconds.
enum WorkerQuick {
    /// `{"id":N,"op":OP,"body":` BODY `}`.
    static func request(id: UInt64, op: StaticString, body: (inout QuickJSON.Writer) -> Void) -> [UInt8] {
        var writer = QuickJSON.Writer()
        writer.beginObject()
        writer.key("id"); writer.integer(id)
        writer.key("op"); writer.appendByte(UInt8(ascii: "\"")); writer.appendStatic(op); writer.appendByte(UInt8(ascii: "\""))
        writer.key("body"); body(&writer)
        writer.endObject()
        return writer.bytes
    }

    /// A create's body; `image` only when the worker may not have the daemon's record of it.
    static func create(_ request: WorkerCreate, into writer: inout QuickJSON.Writer) -> Bool {
        guard request.image == nil else { return false }
        writer.beginObject()
        writer.key("id"); writer.string(request.id)
        writer.key("start"); writer.boolean(request.start)
        if let untilEnd = request.untilEnd { writer.key("untilEnd"); writer.boolean(untilEnd) }
        if let removeAtEnd = request.removeAtEnd { writer.key("removeAtEnd"); writer.boolean(removeAtEnd) }
        if let answerHead = request.answerHead { writer.key("answerHead"); writer.string(answerHead) }
        writer.key("spec"); request.spec.write(into: &writer)
        writer.endObject()
        return true
    }

    /// A create's body from its tree; nil when it needs JSONDecoder (it carries an image record).
    static func create(_ body: QuickJSON.Node?) -> WorkerCreate? {
        guard let members = body?.members else { return nil }
        var (id, start, spec): (String?, Bool?, ContainerSpec?) = (nil, nil, nil)
        var untilEnd: Bool?
        var removeAtEnd: Bool?
        var answerHead: String?
        for member in members {
            switch member.key {
            case "id": id = member.value.string
            case "start": start = member.value.boolean
            case "untilEnd": guard let flag = member.value.boolean else { return nil }; untilEnd = flag
            case "removeAtEnd": guard let flag = member.value.boolean else { return nil }; removeAtEnd = flag
            case "answerHead": guard let text = member.value.string else { return nil }; answerHead = text
            case "spec": spec = ContainerSpec.quick(member.value)
            default: return nil
            }
        }
        guard let id, let start, let spec else { return nil }
        return WorkerCreate(id: id, spec: spec, image: nil, start: start, untilEnd: untilEnd, removeAtEnd: removeAtEnd, answerHead: answerHead)
    }

    /// A remove's body, `{"id":ID,"force":BOOL}`.
    static func remove(_ request: WorkerRemove, into writer: inout QuickJSON.Writer) {
        writer.beginObject()
        writer.key("id"); writer.string(request.id)
        writer.key("force"); writer.boolean(request.force)
        writer.endObject()
    }

    static func remove(_ body: QuickJSON.Node?) -> WorkerRemove? {
        guard let members = body?.members, members.count == 2 else { return nil }
        var (id, force): (String?, Bool?) = (nil, nil)
        for member in members {
            switch member.key {
            case "id": id = member.value.string
            case "force": force = member.value.boolean
            default: return nil
            }
        }
        guard let id, let force else { return nil }
        return WorkerRemove(id: id, force: force)
    }

    /// `{"id":N,"result":{}}`: the answer of an op that returns nothing.
    static func done(id: UInt64) -> [UInt8] {
        var writer = QuickJSON.Writer(capacity: 32)
        writer.beginObject()
        writer.key("id"); writer.integer(id)
        writer.key("result"); writer.appendStatic("{}")
        writer.endObject()
        return writer.bytes
    }

    /// `{"id":N,"result":INFO}`; nil when the info needs the Codable form.
    static func reply(id: UInt64, info: ContainerInfo) -> [UInt8]? {
        var writer = QuickJSON.Writer(capacity: 512)
        writer.beginObject()
        writer.key("id"); writer.integer(id)
        writer.key("result")
        guard info.write(into: &writer) else { return nil }
        writer.endObject()
        return writer.bytes
    }

    /// `{"id":0,"event":"exit","body":{"info":INFO,...}}`; nil when the info needs the Codable form.
    static func exitEvent(_ exit: WorkerExit) -> [UInt8]? {
        var writer = QuickJSON.Writer(capacity: 512)
        writer.beginObject()
        writer.key("id"); writer.integer(0)
        writer.key("event"); writer.string("exit")
        writer.key("body")
        guard write(exit, into: &writer) else { return nil }
        writer.endObject()
        return writer.bytes
    }

    /// `{"info":INFO,"vmExits":N,...}` (what `exit(_:)` reads); false when the info needs the Codable form.
    static func write(_ exit: WorkerExit, into writer: inout QuickJSON.Writer) -> Bool {
        writer.beginObject()
        writer.key("info")
        guard exit.info.write(into: &writer) else { return false }
        if let vmExits = exit.vmExits { writer.key("vmExits"); writer.integer(vmExits) }
        if let pageFaults = exit.pageFaults { writer.key("pageFaults"); writer.integer(pageFaults) }
        if let emulated = exit.emulatedInstructions { writer.key("emulatedInstructions"); writer.integer(emulated) }
        writer.endObject()
        return true
    }

    /// An exit event's body from its tree; nil when it needs JSONDecoder.
    static func exit(_ body: QuickJSON.Node?) -> WorkerExit? {
        guard let members = body?.members else { return nil }
        var exit: WorkerExit?
        var counters: [String: UInt64] = [:]
        for member in members {
            switch member.key {
            case "info": exit = ContainerInfo.quick(member.value).map { WorkerExit(info: $0) }
            case "vmExits", "pageFaults", "emulatedInstructions":
                guard let count = member.value.integer, count >= 0 else { return nil }
                counters[member.key] = UInt64(count)
            default: return nil
            }
        }
        exit?.vmExits = counters["vmExits"]
        exit?.pageFaults = counters["pageFaults"]
        exit?.emulatedInstructions = counters["emulatedInstructions"]
        return exit
    }

    /// A run's answer with its end: `{"id":N,"result":INFO,"ended":{"exitCode":N,"exitReason":S,
    /// "finishedAt":T,"startedAt":T,"vmExits":N,...,"stdout":S,"stderr":S,"removed":B}}`. The
    /// result is the info as the run started; the end has only what its exit changed (the
    /// daemon reads one container's info, not two). Nil when an info needs the Codable form
    /// or a time is not finite (the answer then goes without its end).
    static func reply(id: UInt64, info: ContainerInfo, end: WorkerRunEnd) -> [UInt8]? {
        let ended = end.exit.info
        guard let finishedAt = ended.finishedAt, finishedAt.isFinite, ended.startedAt?.isFinite ?? true else { return nil }
        var writer = QuickJSON.Writer(capacity: 1024)
        writer.beginObject()
        writer.key("id"); writer.integer(id)
        writer.key("result")
        guard info.write(into: &writer) else { return nil }
        writer.key("ended")
        writer.beginObject()
        writer.key("exitCode"); writer.integer(ended.exitCode ?? 137)
        writer.key("exitReason"); writer.string(ended.exitReason ?? "exited")
        writer.key("finishedAt"); writer.double(finishedAt)
        if let startedAt = ended.startedAt { writer.key("startedAt"); writer.double(startedAt) }
        if let vmExits = end.exit.vmExits { writer.key("vmExits"); writer.integer(vmExits) }
        if let pageFaults = end.exit.pageFaults { writer.key("pageFaults"); writer.integer(pageFaults) }
        if let emulated = end.exit.emulatedInstructions { writer.key("emulatedInstructions"); writer.integer(emulated) }
        if let stdout = end.stdout { writer.key("stdout"); writer.string(String(decoding: stdout, as: UTF8.self)) }
        if let stderr = end.stderr { writer.key("stderr"); writer.string(String(decoding: stderr, as: UTF8.self)) }
        writer.key("removed"); writer.boolean(end.removed)
        if let answered = end.answered { writer.key("answered"); writer.integer(answered) }
        if let rest = end.answerRest, !rest.isEmpty { writer.key("answerRest"); writer.string(Data(rest).base64EncodedString()) }
        writer.endObject()
        writer.endObject()
        return writer.bytes
    }

    /// `reply(id:info:end:)`'s frame made as if `end` had said what the worker wrote of the
    /// caller's answer: the two fields go last in the end, before its closing and the frame's
    /// (the same bytes as `reply` with them set; the frame is not written twice).
    static func withAnswered(_ frame: [UInt8], written: Int, rest: [UInt8]) -> [UInt8] {
        var writer = QuickJSON.Writer(capacity: frame.count + 32 + rest.count * 4 / 3)
        writer.appendBytes(frame.dropLast(2))
        writer.appendStatic(",\"answered\":")
        writer.integer(written)
        if !rest.isEmpty {
            writer.appendStatic(",\"answerRest\":")
            writer.string(Data(rest).base64EncodedString())
        }
        writer.appendStatic("}}")
        return writer.bytes
    }

    /// A run's end from its answer's frame (`started`: the answer's result); nil when it has none.
    static func runEnd(of frame: WorkerFrame, started: ContainerInfo, shard: Int) throws(EngineError) -> WorkerRunEnd? {
        guard let ended = frame.member("ended") else { return nil }
        let malformed = EngineError(.failed, "worker \(shard) answered a run with a malformed end")
        func count(_ value: QuickJSON.Node) throws(EngineError) -> UInt64 {
            guard let count = value.integer, count >= 0 else { throw malformed }
            return UInt64(count)
        }
        guard let members = ended.members else { throw malformed }
        var info = started
        info.state = .exited
        var end = WorkerRunEnd(exit: WorkerExit(info: info), stdout: nil, stderr: nil, removed: false)
        var (exitCode, exitReason, finishedAt, removed): (Int?, String?, Double?, Bool?) = (nil, nil, nil, nil)
        for member in members {
            let value = member.value
            switch member.key {
            case "exitCode": exitCode = value.integer
            case "exitReason": exitReason = value.string
            case "finishedAt": finishedAt = value.double
            case "startedAt": guard let time = value.double else { throw malformed }; end.exit.info.startedAt = time
            case "vmExits": end.exit.vmExits = try count(value)
            case "pageFaults": end.exit.pageFaults = try count(value)
            case "emulatedInstructions": end.exit.emulatedInstructions = try count(value)
            case "stdout": guard let text = value.string else { throw malformed }; end.stdout = Array(text.utf8)
            case "stderr": guard let text = value.string else { throw malformed }; end.stderr = Array(text.utf8)
            case "removed": removed = value.boolean
            case "answered": guard let count = value.integer, count >= 0 else { throw malformed }; end.answered = count
            case "answerRest":
                guard let text = value.string, let bytes = Data(base64Encoded: text) else { throw malformed }
                end.answerRest = Array(bytes)
            default: throw malformed
            }
        }
        guard let exitCode, let exitReason, let finishedAt, let removed else { throw malformed }
        end.exit.info.exitCode = exitCode
        end.exit.info.exitReason = exitReason
        end.exit.info.finishedAt = finishedAt
        end.removed = removed
        return end
    }

    /// A reply's result, or the worker's refusal thrown; nil when the frame has no tree.
    static func result(of frame: WorkerFrame, shard: Int, op: String) throws -> QuickJSON.Node? {
        guard frame.tree != nil else { return nil }
        if let fault = frame.member("error"), fault != .null {
            guard let members = fault.members else { throw EngineError(.failed, "worker \(shard) replied to \(op) with a malformed error") }
            var fields: [String: String] = [:]
            for member in members { if let text = member.value.string { fields[member.key] = text } }
            throw WorkerFault(kind: fields["kind"] ?? EngineError.Kind.failed.rawValue, message: fields["message"] ?? "", field: fields["field"]).engineError
        }
        guard let result = frame.member("result"), result != .null else {
            throw EngineError(.failed, "worker \(shard) replied to \(op) without a result")
        }
        return result
    }
}

// MARK: Callers' connections held by a worker (`CallerConnections`)

extension WorkerQuick {
    private static func event(_ name: StaticString, capacity: Int, body: (inout QuickJSON.Writer) -> Void) -> [UInt8] {
        var writer = QuickJSON.Writer(capacity: capacity)
        writer.beginObject()
        writer.key("id"); writer.integer(0)
        writer.key("event"); writer.appendStatic("\"")
        writer.appendStatic(name)
        writer.appendStatic("\"")
        writer.key("body")
        body(&writer)
        writer.endObject()
        return writer.bytes
    }

    /// `callerRun`: a run on a held connection, begun (when it runs on at the daemon's sync)
    /// or ended (with its exit, and whether the worker removed it) (`WorkerCallerRun`).
    static func callerRun(_ run: WorkerCallerRun) -> [UInt8] {
        var quick = true
        let frame = event("callerRun", capacity: 1024) { writer in
            writer.beginObject()
            writer.key("key"); writer.integer(run.key)
            writer.key("actor"); writer.string(run.actor)
            writer.key("info")
            quick = run.info.write(into: &writer)
            if quick, let exit = run.exit {
                writer.key("exit")
                quick = write(exit, into: &writer)
            }
            if run.removed { writer.key("removed"); writer.boolean(true) }
            writer.endObject()
        }
        if quick { return frame }
        return (try? Array(JSONEncoder().encode(WorkerEventMessage(event: "callerRun", body: run)))) ?? []
    }

    static func callerRun(_ body: QuickJSON.Node?) -> WorkerCallerRun? {
        guard let members = body?.members else { return nil }
        var (key, actor, info): (UInt64?, String?, ContainerInfo?) = (nil, nil, nil)
        var ended: WorkerExit?
        var removed = false
        for member in members {
            switch member.key {
            case "key": key = member.value.integer.flatMap { $0 >= 0 ? UInt64($0) : nil }
            case "actor": actor = member.value.string
            case "info": info = ContainerInfo.quick(member.value)
            case "exit": guard let exit = exit(member.value) else { return nil }; ended = exit
            case "removed": guard let flag = member.value.boolean else { return nil }; removed = flag
            default: return nil
            }
        }
        guard let key, let actor, let info else { return nil }
        return WorkerCallerRun(key: key, actor: actor, info: info, exit: ended, removed: removed)
    }

    /// `connectionEnd`: the worker let go of a held connection, giving it back with the bytes
    /// read of its next request (`leftover`, base64) or closed (no `leftover`).
    static func connectionEnd(key: UInt64, leftover: [UInt8]?) -> [UInt8] {
        event("connectionEnd", capacity: 64 + (leftover?.count ?? 0) * 4 / 3) { writer in
            writer.beginObject()
            writer.key("key"); writer.integer(key)
            if let leftover { writer.key("leftover"); writer.string(Data(leftover).base64EncodedString()) }
            writer.endObject()
        }
    }

    static func connectionEnd(_ body: QuickJSON.Node?) -> (key: UInt64, leftover: [UInt8]?)? {
        guard let members = body?.members, let key = members.first(where: { $0.key == "key" })?.value.integer, key >= 0 else { return nil }
        guard let encoded = members.first(where: { $0.key == "leftover" })?.value else { return (UInt64(key), nil) }
        guard let text = encoded.string, let bytes = Data(base64Encoded: text) else { return nil }
        return (UInt64(key), Array(bytes))
    }
}
