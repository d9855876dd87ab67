import API
import Engine
import Foundation
import NIOCore
import NIOHTTP1

/// create, list, inspect, start, stop, kill, wait, remove.
extension VirtualContainerHost {
    func createContainer(_ request: DockerRequest) async throws -> DockerResponse {
        guard request.body.first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }) == UInt8(ascii: "{") else {
            throw DockerError.badRequest("the body of containers/create must be a JSON object")
        }
        let body = try CreateBody.quick(from: request.body) ?? request.decode(CreateBody.self)
        try UnsupportedOptions.check(body)
        guard let reference = body.Image, !reference.isEmpty else { throw DockerError.badRequest("no image given (Config.Image is empty)") }
        if let platform = request.string("platform"), !platform.isEmpty, !platform.hasPrefix("linux") {
            throw DockerError.badRequest("platform \(platform) is not supported: this VCH runs linux/amd64 process VMs")
        }
        let image = try await findImage(reference)
        var spec = ContainerSpec(image: image.name, pool: configuration.pool)
        if let name = request.string("name"), !name.isEmpty {
            let bare = name.hasPrefix("/") ? String(name.dropFirst()) : name
            guard DockerNames.validContainerName(bare), bare.utf8.count <= 62 - self.name.utf8.count else {
                throw DockerError.badRequest("Invalid container name (\(name)), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, up to \(62 - self.name.utf8.count) characters")
            }
            spec.name = agentName(bare)
            spec.hostname = bare  // the agent's default is its own name, which carries the VCH prefix
        }
        // Docker's Entrypoint and Cmd as the client sent them: the agent merges them with the
        // image's as Docker does, argv[0] the command's first word as written.
        spec.entrypoint = body.Entrypoint
        spec.cmd = body.Cmd.flatMap { $0.isEmpty ? nil : $0 }
        if let env = body.Env, !env.isEmpty { spec.environment = DockerEnvironment.environment(image: image.environment, overrides: env) }
        if let hostname = body.Hostname, !hostname.isEmpty { spec.hostname = hostname }
        if let bytes = body.HostConfig?.Memory, bytes != 0 {
            let mib = (bytes + (1 << 20) - 1) >> 20
            guard bytes > 0, ParentPolicy.memoryRange.contains(mib) else {
                throw DockerError.badRequest("--memory \(bytes) bytes is out of range: a container's memory is \(ParentPolicy.memoryRange.lowerBound) MiB to \(ParentPolicy.memoryRange.upperBound) MiB")
            }
            spec.memoryMiB = mib
            spec.memoryReservationMiB = mib  // the pool is charged the container's memory
        }
        var labels = body.Labels ?? [:]
        if let reserved = labels.keys.sorted().first(where: Label.isInternal) {
            throw DockerError.badRequest("label \(reserved) is reserved for the VCH (labels starting with \(Label.owner))")
        }
        labels[Label.owner] = name
        if body.HostConfig?.AutoRemove == true { labels[Label.autoRemove] = "1" }
        if body.Tty == true {
            labels[Label.tty] = "1"
            spec.tty = true
        }
        if body.OpenStdin == true {
            labels[Label.openStdin] = "1"
            spec.openStdin = true
        }
        if body.StdinOnce == true { labels[Label.stdinOnce] = "1" }
        spec.labels = labels
        let response: AgentClient.Response
        do {
            response = try await agent.call("POST", "/v1/containers", body: spec.quickJSON())
        } catch let error as DockerError where error.status == .notFound {
            // The docker CLI takes any 404 from create for a missing image and pulls; the image
            // was found, so this is the placement state's refusal (an unknown pool or image cost).
            throw DockerError.badRequest("the host agent refused the container: \(error.message)")
        } catch let error as DockerError where error.status == .conflict && spec.name != nil && error.message.hasSuffix("is taken") {
            let bare = dockerName(agentName: spec.name ?? "")
            let holder = (try? await resolve(bare))?.id ?? "?"
            throw DockerError.conflict("Conflict. The container name \"/\(bare)\" is already in use by container \"\(holder)\". You have to remove (or rename) that container to be able to reuse that name.")
        }
        let info = try ContainerInfo.quick(from: response.body) ?? response.decode(ContainerInfo.self)
        events.remember(info)
        rememberCreated(info)
        var answer = ByteBuffer(staticString: "{\"Id\":")
        QuickJSON.write(info.id, into: &answer)
        answer.writeStaticString(",\"Warnings\":[]}\n")
        return DockerResponse(status: .created, headers: [("Content-Type", "application/json")], body: .full(Data(answer.readableBytesView)))
    }

    func listContainers(_ request: DockerRequest) async throws -> DockerResponse {
        let all = try request.bool("all")
        let filters = try request.filters()
        let known: Set<String> = ["status", "label", "name", "id", "ancestor", "exited"]
        if let unknown = filters.keys.sorted().first(where: { !known.contains($0) }) {
            throw DockerError.badRequest("invalid filter '\(unknown)' (this VCH filters by \(known.sorted().joined(separator: ", ")))")
        }
        let limit = try request.int("limit", in: -1...100_000) ?? -1
        let images = try await imagesByName()
        var rows = try await containers().filter { info in
            if !all, filters["status"] == nil, info.state != .running { return false }
            if let statuses = filters["status"], !statuses.contains(info.state.rawValue) { return false }
            if let names = filters["name"], !names.contains(where: { dockerName(info).contains($0) }) { return false }
            if let ids = filters["id"], !ids.contains(where: { info.id.hasPrefix($0) }) { return false }
            if let ancestors = filters["ancestor"], !ancestors.contains(where: { DockerNames.imageCandidates($0).contains(info.image) }) { return false }
            if let codes = filters["exited"], !(info.state == .exited && codes.contains(String(info.exitCode ?? 0))) { return false }
            for label in filters["label"] ?? [] {
                let parts = label.split(separator: "=", maxSplits: 1).map(String.init)
                guard let value = Self.userLabels(info)[parts[0]], parts.count == 1 || value == parts[1] else { return false }
            }
            return true
        }
        rows.reverse()  // newest first, as docker ps lists
        if limit > 0 { rows = Array(rows.prefix(limit)) }
        return try .json(rows.map { summary($0, image: images[$0.image]) })
    }

    func inspectContainer(_ reference: String) async throws -> DockerResponse {
        var info = try await resolve(reference)
        if info.state == .running, let measured = try? await agent.get("/v1/containers/\(info.id)?memory=true", as: ContainerInfo.self) {
            info = measured
        }
        let image = try? await agent.get("/v1/images/\(AgentBackend.escape(info.image))", as: ImageRecord.self)
        return try .json(inspect(info, image: image))
    }

    func startContainer(_ reference: String) async throws -> DockerResponse {
        let info = try await resolve(reference, justCreated: true)
        forgetCreated(info.id)
        switch info.state {
        case .running: return DockerResponse(status: .notModified)
        case .exited: throw DockerError.conflict("container \(dockerName(info)) has exited; this VCH cannot restart a container (its VM is gone): create a new one")
        case .created: break
        }
        try await agent.call("POST", "/v1/containers/\(info.id)/start")
        if info.labels[Label.autoRemove] == "1" {
            // The agent holds the removal before the client hears the start (see `placeWait`).
            await watch.placeWait(info.id, agent: agent, autoRemove: true)
            removeWhenDone(info.id)
        }
        return .noContent
    }

    /// At the VCH's start: its --rm containers that ended meanwhile go now, running ones when they end.
    public func resumeAutoRemoval() async throws {
        for info in try await containers() where info.labels[Label.autoRemove] == "1" && info.state != .created {
            removeWhenDone(info.id)
        }
    }

    /// `POST /containers/prune`: removes this VCH's exited containers.
    func pruneContainers(_ request: DockerRequest) async throws -> DockerResponse {
        let filters = try request.filters()
        if let unknown = filters.keys.sorted().first(where: { $0 != "label" }) {
            throw DockerError.badRequest("invalid filter '\(unknown)' (this VCH prunes by label)")
        }
        var removed: [String] = []
        for info in try await containers() where info.state == .exited {
            let labels = Self.userLabels(info)
            let wanted = (filters["label"] ?? []).allSatisfy { label in
                let parts = label.split(separator: "=", maxSplits: 1).map(String.init)
                return labels[parts[0]].map { parts.count == 1 || $0 == parts[1] } ?? false
            }
            guard wanted else { continue }
            try await agent.call("DELETE", "/v1/containers/\(info.id)")
            removed.append(info.id)
        }
        struct PruneAnswer: Encodable {
            let ContainersDeleted: [String]
            let SpaceReclaimed: Int
        }
        return try .json(PruneAnswer(ContainersDeleted: removed, SpaceReclaimed: 0))
    }

    /// --rm: once the container has exited and its attach streams have sent everything, it goes.
    private func removeWhenDone(_ id: String) {
        Task { [agent, watch, logger] in
            let exit = await watch.exit(id, agent: agent, autoRemove: true) ?? ExitInfo(exitCode: 137, reason: "unknown")
            let exited = ContinuousClock.now
            logger.debug("exit known", metadata: ["container": "\(id)", "removed": "\(exit.removed ?? false)", "t": Timeline.stamp()])
            await watch.drained(id)
            let drained = ContinuousClock.now
            // The agent removed it with its exit when its output came in the answer; else its
            // attach streams have read the logs by now, and it goes.
            if exit.removed != true {
                do {
                    try await agent.call("DELETE", "/v1/containers/\(id)?force=true")
                } catch {
                    logger.warning("auto-remove failed", metadata: ["container": "\(id)", "error": "\(error)"])
                }
            }
            await watch.markRemoved(id, exit: exit)
            logger.debug("auto-removed", metadata: ["container": "\(id)", "drainMs": "\(Self.milliseconds(drained - exited))",
                                                    "removeMs": "\(Self.milliseconds(ContinuousClock.now - drained))", "t": Timeline.stamp()])
        }
    }

    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    func stopContainer(_ reference: String, _ request: DockerRequest) async throws -> DockerResponse {
        if let signal = request.string("signal"), !signal.isEmpty, DockerNames.signal(signal) != 15 {
            throw DockerError.badRequest("stop --signal \(signal) is not supported: this VCH stops with SIGTERM, then powers off (use kill -s)")
        }
        let grace = try request.int("t", in: -1...3600) ?? 10
        let info = try await resolve(reference)
        forgetCreated(info.id)
        guard info.state != .exited else { return DockerResponse(status: .notModified) }
        try await agent.call("POST", "/v1/containers/\(info.id)/stop?grace=\(max(grace, 0))")
        return .noContent
    }

    func killContainer(_ reference: String, _ request: DockerRequest) async throws -> DockerResponse {
        let text = request.string("signal").flatMap { $0.isEmpty ? nil : $0 } ?? "KILL"
        guard let signal = DockerNames.signal(text) else { throw DockerError.badRequest("invalid signal: \(text)") }
        let info = try await resolve(reference)
        forgetCreated(info.id)
        guard info.state != .exited else {
            throw DockerError.conflict("cannot kill container: \(dockerName(info)): container \(info.id) is not running")
        }
        try await agent.call("POST", "/v1/containers/\(info.id)/kill?signal=\(signal)")
        return .noContent
    }

    /// docker's resize (`-t`, at the start and on each window change): the agent sets the
    /// terminal's size. A container without a terminal has nothing to size (200, as Docker's
    /// runtime ignores it); one that is not running is refused (409), as Docker does.
    func resizeContainer(_ reference: String, _ request: DockerRequest) async throws -> DockerResponse {
        var size: [Int] = []
        for name in ["h", "w"] {
            guard let text = request.string(name), let value = Int(text), Engine.windowRange.contains(value) else {
                throw DockerError.badRequest("resize: \(name)=\(request.string(name) ?? "") is not a size in \(Engine.windowRange)")
            }
            size.append(value)
        }
        let info = try await resolve(reference)
        guard info.state == .running else { throw DockerError.conflict("Container \(info.id) is not running") }
        guard info.tty == true else { return DockerResponse(status: .ok) }
        try await agent.call("POST", "/v1/containers/\(info.id)/resize?rows=\(size[0])&columns=\(size[1])")
        return DockerResponse(status: .ok)
    }

    func removeContainer(_ reference: String, _ request: DockerRequest) async throws -> DockerResponse {
        let force = try request.bool("force")
        if try request.bool("link") { throw DockerError.badRequest("rm --link is not supported: this VCH has no networking") }
        let info = try await resolve(reference)
        if info.state == .running, !force {
            throw DockerError.conflict("cannot remove container \"/\(dockerName(info))\": container is running: stop the container before removing or force remove")
        }
        forgetCreated(info.id)
        try await agent.call("DELETE", "/v1/containers/\(info.id)?force=\(force)")
        events.remember(info)
        return .noContent
    }

    /// Answers at once with the status line, and with `{"StatusCode": N}` when the condition holds.
    func waitContainer(_ reference: String, _ request: DockerRequest) async throws -> DockerResponse {
        let condition = request.string("condition").flatMap { $0.isEmpty ? nil : $0 } ?? "not-running"
        guard ["not-running", "next-exit", "removed"].contains(condition) else {
            throw DockerError.badRequest("invalid condition: \"\(condition)\" (not-running, next-exit or removed)")
        }
        let info = try await resolve(reference, justCreated: true)
        let (agent, watch, feed) = (self.agent, self.watch, self.feed)
        let id = info.id
        let autoRemove = info.labels[Label.autoRemove] == "1"
        let exitInfo: @Sendable () async throws -> ExitInfo = {
            if condition == "not-running", info.state == .exited { return ExitInfo(exitCode: info.exitCode ?? 0, reason: info.exitReason ?? "") }
            if condition == "removed", autoRemove { return await watch.removal(id) }
            guard let exit = await watch.exit(id, agent: agent, autoRemove: autoRemove) else { throw DockerError.noSuchContainer(reference) }
            if condition == "removed" {
                // The agent's removal event wakes it (one follow for the whole VCH); it asks
                // the agent itself after registering, and again if no event comes within a second.
                while !Task.isCancelled {
                    let token = feed.expectRemoval(id)
                    guard (try? await agent.call("GET", "/v1/containers/\(id)")) != nil else {
                        feed.cancelRemoval(id, token: token)
                        break
                    }
                    await feed.awaitRemoval(id, token: token)
                }
                try Task.checkCancellation()
            }
            return exit
        }
        let body = AsyncThrowingStream<Data, Error> { continuation in
            let task = Task {
                do {
                    let exit = try await exitInfo()
                    let answer = WaitAnswer(StatusCode: exit.exitCode, Error: nil)
                    continuation.yield(try JSONEncoder().encode(answer) + Data([0x0A]))
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
        return DockerResponse(headers: [("Content-Type", "application/json")], body: .stream(body))
    }
}
