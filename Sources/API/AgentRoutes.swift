import Engine
import Foundation
import Hummingbird
import Placement
import Prometheus
import Store

/// The API's routes, each registered under its path in the OpenAPI document (`{name}`
/// parameters) and recorded, so the daemon can check at start that it serves exactly the
/// document's operations. Handlers only decode, call the engine and encode.
struct AgentRoutes: Sendable {
    let engine: Engine
    let registry: PrometheusCollectorRegistry
    let document: ByteBuffer
    let vchs: VCHRegistry

    /// (METHOD, path) of every route registered, in the document's spelling.
    final class Recorder: @unchecked Sendable {
        // @unchecked: filled while the router is built, on one thread, before serving; read after.
        var routes: [(method: String, path: String)] = []
    }

    func register(on router: Router<AgentContext>, recorder: Recorder) {
        func on(_ method: HTTPRequest.Method, _ path: String, _ handler: @escaping @Sendable (Request, AgentContext) async throws -> Response) {
            let routerPath = path.split(separator: "/").map { $0.hasPrefix("{") ? ":" + $0.dropFirst().dropLast() : $0 }.joined(separator: "/")
            router.on(RouterPath("/" + routerPath), method: method) { request, context in try await handler(request, context) }
            recorder.routes.append((method.rawValue, path))
        }
        let engine = self.engine

        // MARK: Daemon
        let pong = ByteBuffer(string: #"{"ok":true}"#)
        on(.get, "/v1/_ping") { _, _ in Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: pong)) }
        on(.get, "/v1/version") { _, _ in try json(VersionBody(version: Engine.version, api: "v1", kvm: engine.kvmMessage == nil, kvmMessage: engine.kvmMessage)) }
        on(.get, "/v1/workers") { request, _ in try json(await engine.workers(withSharing: try request.bool("sharing", default: false))) }
        on(.get, "/v1/openapi.json") { [document] _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: document))
        }
        on(.get, "/metrics") { [registry] _, _ in
            await engine.refreshWorkerMetrics()
            // The memory figures read the page maps of the VMs (/proc/self/pagemap): blocking reads, off the cooperative pool.
            let buffer = try await engine.onBlockingThread { () -> [UInt8] in
                engine.refreshMetrics()
                var buffer: [UInt8] = []
                registry.emit(into: &buffer)
                return buffer
            }
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(bytes: buffer)))
        }

        // MARK: Images
        on(.get, "/v1/images") { _, _ in try json(engine.images()) }
        on(.post, "/v1/images") { request, context in
            var request = request
            let body = try await request.decodeStrict(ImageRequest.self)
            let image = ImageRecord(name: body.name, rootfs: body.rootfs, executable: body.executable, arguments: body.arguments ?? [],
                                    environment: body.environment ?? [])
            return try json(try await engine.addImage(image, by: context.actor), status: .created)
        }
        on(.get, "/v1/images/{name}") { _, context in try json(try engine.image(try context.parameter("name"))) }
        on(.delete, "/v1/images/{name}") { _, context in
            try await engine.removeImage(try context.parameter("name"), by: context.actor)
            return Response(status: .noContent)
        }

        // MARK: Warm parents
        on(.get, "/v1/parents") { request, _ in try json(try await engine.parents(withSharing: try request.bool("sharing", default: true))) }
        on(.post, "/v1/parents") { request, context in
            var request = request
            let body = try await request.decodeStrict(ParentRequest.self)
            let forkPoint = try body.forkPoint ?? engine.image(body.image).defaultForkPoint ?? .entry
            let policy = ParentPolicy(image: body.image, forkPoint: forkPoint, memoryMiB: body.memoryMiB ?? ParentPolicy.defaultMemoryMiB,
                                      parents: body.parents ?? 1, readyVMs: body.readyVMs ?? 8)
            return try json(try await engine.createParents(policy, by: context.actor), status: .created)
        }
        on(.get, "/v1/parents/{id}") { request, context in
            try json(try await engine.parent(try context.parameter("id"), withSharing: try request.bool("sharing", default: true)))
        }
        on(.delete, "/v1/parents/{id}") { _, context in
            try await engine.removeParents(try context.parameter("id"), by: context.actor)
            return Response(status: .noContent)
        }
        on(.post, "/v1/parents/{id}/drain") { _, context in try json(try await engine.drainParents(try context.parameter("id"), by: context.actor)) }

        // MARK: Containers
        on(.get, "/v1/containers") { request, _ in
            let state = try request.string("state").map { text in
                guard let state = ContainerState(rawValue: text) else { throw APIError.invalid("state \(text) is not created, running or exited", field: "state") }
                return state
            }
            let labels = request.uri.queryParameters.getAll("label").map { String($0) }
            if labels.contains(where: { $0.unicodeScalars.count > 1200 }) { throw APIError.invalid("a label filter is over 1200 characters", field: "label") }
            if labels.contains(where: { $0.isEmpty || $0.hasPrefix("=") }) { throw APIError.invalid("a label filter is KEY or KEY=VALUE with a key", field: "label") }
            let listed = engine.containers(ContainerFilter(state: state, image: try request.string("image", maxLength: 128), labels: labels))
            // memory=true: each running one's memory (the page map of its VMs), off the cooperative pool.
            guard try request.bool("memory", default: false) else { return try json(listed) }
            return try json(await engine.withMemory(listed))
        }
        on(.post, "/v1/containers") { request, context in
            var request = request
            let spec = try await request.decodeStrict(ContainerSpec.self)
            return try json(try await engine.createContainer(spec, by: context.actor), status: .created)
        }
        on(.post, "/v1/containers/run") { request, context in
            let remove = try request.bool("remove", default: true)
            var request = request
            let spec = try await request.decodeStrict(ContainerSpec.self)
            // On the agent's Unix socket the result goes as soon as the engine has it, ahead of
            // the container's removal and records (which follow before the next request).
            let early = context.earlyAnswer
            var answer: (@Sendable (RunResult) -> Void)?
            if let early {
                answer = { (result: RunResult) in
                    if let body = result.quickJSON() { early.send(.ok, json: body) }
                }
            }
            // On a connection's own loop: run there, and what only wakes background threads
            // in the loop's next turn, after the answer is written.
            let loop = context.ownsLoop ? context.channel?.eventLoop : nil
            let callersThread = loop.map { loop in CallersThread(later: { work in loop.execute(work) }) }
            // In workers mode the worker writes the answer itself, when it can (see `RunAnswerHandOff`).
            let handOff = engine.runsInWorkers && remove && spec.pool == nil ? early?.handOff(.ok) : nil
            let result = try await engine.runContainer(spec, remove: remove, by: context.actor, answer: answer, handOff: handOff,
                                                       callersThread: callersThread)
            // Answered already: the connection drops what the route returns.
            if early?.sent == true || early?.answeredByWorker == true { return Response(status: .ok) }
            guard let body = result.quickJSON() else { return try json(result) }
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: body))
        }
        on(.get, "/v1/containers/{id}") { request, context in
            let info = try engine.inspectContainer(try context.parameter("id"))
            guard try request.bool("memory", default: false) else { return try json(info) }
            return try json(await engine.withMemory([info])[0])
        }
        on(.delete, "/v1/containers/{id}") { request, context in
            try await engine.removeContainer(try context.parameter("id"), force: try request.bool("force", default: false), by: context.actor)
            return Response(status: .noContent)
        }
        on(.post, "/v1/containers/{id}/start") { _, context in try json(try await engine.startContainer(try context.parameter("id"), by: context.actor)) }
        on(.post, "/v1/containers/{id}/wait") { request, context in
            let output = try request.int("output", in: 0...Engine.waitOutputLimit)
            let remove = try request.bool("remove", default: false)
            let exit = try await engine.waitContainer(try context.parameter("id"), outputUpTo: output, remove: remove, by: context.actor)
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: exit.quickJSON()))
        }
        on(.get, "/v1/containers/{id}/logs") { request, context in
            let streamName = try request.string("stream") ?? "all"
            guard let stream = LogStream(rawValue: streamName) else { throw APIError.invalid("stream \(streamName) is not stdout, stderr or all", field: "stream") }
            let query = LogQuery(stream: stream, since: try request.int("since", in: 0...(1 << 40)) ?? 0,
                                 sinceTime: try request.double("sinceTime", in: 0...LogQuery.latestTime), untilTime: try request.double("untilTime", in: 0...LogQuery.latestTime),
                                 timestamps: try request.bool("timestamps", default: false), follow: try request.bool("follow", default: false))
            let logs = try engine.logs(try context.parameter("id"), query)
            return Response(status: .ok, headers: [.contentType: "application/octet-stream"], body: ResponseBody { writer in
                for try await chunk in logs { try await writer.write(ByteBuffer(bytes: chunk)) }
                try await writer.finish(nil)
            })
        }
        on(.post, "/v1/containers/{id}/stdin") { request, context in
            let close = try request.bool("close", default: false)
            var request = request
            let data = Data((try await request.collectBody(upTo: AgentLimits.maxBodyBytes)).readableBytesView)
            try await engine.attachStdin(try context.parameter("id"), data: data, close: close, by: context.actor)
            return Response(status: .noContent)
        }
        on(.post, "/v1/containers/{id}/resize") { request, context in
            guard let rows = try request.int("rows", in: Engine.windowRange) else { throw APIError.invalid("rows is required (1...65535)", field: "rows") }
            guard let columns = try request.int("columns", in: Engine.windowRange) else { throw APIError.invalid("columns is required (1...65535)", field: "columns") }
            try await engine.resizeContainer(try context.parameter("id"), rows: rows, columns: columns, by: context.actor)
            return Response(status: .noContent)
        }
        on(.post, "/v1/containers/{id}/stop") { request, context in
            let grace = try request.int("grace", in: 0...3600) ?? 10
            return try json(try await engine.stopContainer(try context.parameter("id"), grace: .seconds(grace), by: context.actor))
        }
        on(.post, "/v1/containers/{id}/kill") { request, context in
            let signal = try request.int("signal", in: 1...64) ?? 9
            return try json(try await engine.killContainer(try context.parameter("id"), signal: Int32(signal), by: context.actor))
        }
        on(.get, "/v1/containers/{id}/processes") { _, context in try json(try await engine.containerProcesses(try context.parameter("id"))) }
        on(.get, "/v1/containers/{id}/stats") { _, context in
            let id = try context.parameter("id")
            // The memory figures read the page maps of the VMs (/proc/self/pagemap): the engine reads them off the cooperative pool.
            return try json(try await engine.containerStats(id))
        }

        // MARK: Events
        on(.get, "/v1/events") { request, _ in try await events(request) }

        // MARK: Placement
        registerPlacement(on)
        registerImagePull(on)
        registerAudit(on)
        registerVCHs(on)
    }

    private func events(_ request: Request) async throws -> Response {
        let since = try request.double("since", in: 0...1e11)
        let until = try request.double("until", in: 0...1e11)
        let types = try request.string("type", maxLength: 1000).map { $0.split(separator: ",").map(String.init) } ?? []
        let firstAfter = Int64(try request.int("after", in: 0...((1 << 53) - 1)) ?? 0)
        let limit = try request.int("limit", in: 1...10000) ?? 1000
        let follow = try request.bool("follow", default: false)
        let timeout = try request.int("timeout", in: 1...86400)
        let engine = self.engine
        guard follow else {
            return try json(try await engine.events(afterID: firstAfter, since: since, until: until, types: types, limit: limit).map(EventBody.init))
        }
        let deadline = timeout.map { ContinuousClock.now + .seconds($0) }
        return Response(status: .ok, headers: [.contentType: "application/x-ndjson"], body: ResponseBody { writer in
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            var after = firstAfter
            while true {
                let generation = engine.eventFeed.generation
                let batch = try await engine.events(afterID: after, since: since, until: until, types: types, limit: 1000)
                for event in batch {
                    var line = try encoder.encode(EventBody(event))
                    line.append(0x0A)
                    try await writer.write(ByteBuffer(bytes: line))
                    after = max(after, event.id ?? after)
                }
                if batch.count == 1000 { continue }
                if let deadline, ContinuousClock.now >= deadline { break }
                guard await engine.eventFeed.wait(after: generation, timeout: .milliseconds(500)) else { break }
            }
            try await writer.finish(nil)
        })
    }

    private func registerPlacement(_ on: (HTTPRequest.Method, String, @escaping @Sendable (Request, AgentContext) async throws -> Response) -> Void) {
        let engine = self.engine
        let placement = engine.placement
        on(.get, "/v1/placement/pools") { _, _ in
            let report = try await engine.onBlockingThread { try placement.read { core in try core.capacityReport() } }
            return try json(report.pools)
        }
        on(.post, "/v1/placement/pools") { request, context in
            var request = request
            let body = try await request.decodeStrict(PoolRequest.self)
            try Bounds.name(body.name, "name")
            if let parent = body.parent { try Bounds.name(parent, "parent") }
            for (value, range, field) in [(body.memoryReservationKiB, Bounds.kib, "memoryReservationKiB"), (body.cpuReservationMHz, Bounds.mhz, "cpuReservationMHz"),
                                          (body.memoryLimitKiB, Bounds.kib, "memoryLimitKiB"), (body.cpuLimitMHz, Bounds.mhz, "cpuLimitMHz"),
                                          (body.shares, 1...1_000_000, "shares")] { try Bounds.check(value, range, field) }
            let policy = try body.policy.map { text in
                guard let policy = PlacementPolicy(rawValue: text) else { throw APIError.invalid("policy \(text) is not spread or pack", field: "policy") }
                return policy
            } ?? .spread
            let spec = PoolSpec(name: body.name, parent: body.parent ?? PoolTree.rootName,
                                reservation: Resources(memoryKiB: body.memoryReservationKiB ?? 0, cpuMHz: body.cpuReservationMHz ?? 0),
                                memoryLimitKiB: body.memoryLimitKiB, cpuLimitMHz: body.cpuLimitMHz, shares: body.shares ?? 1000,
                                expandable: body.expandable ?? true, policy: policy)
            try await engine.audited("pool.add", subject: spec.name, actor: context.actor) {
                try await engine.onBlockingThread { try placement.addPool(spec) }
            }
            return try json(spec, status: .created)
        }
        on(.get, "/v1/placement/hosts") { _, _ in
            let report = try await engine.onBlockingThread { try placement.read { core in try core.capacityReport() } }
            return try json(report.hosts)
        }
        on(.post, "/v1/placement/hosts") { request, context in
            var request = request
            let body = try await request.decodeStrict(HostRequest.self)
            try Bounds.name(body.name, "name")
            try Bounds.check(body.cpuCores, 1...4096, "cpuCores")
            try Bounds.check(body.cpuMHzPerCore, 1...100_000, "cpuMHzPerCore")
            guard (1...64).contains(body.nodeMemoryKiB.count) else { throw APIError.invalid("nodeMemoryKiB needs 1-64 entries", field: "nodeMemoryKiB") }
            for value in body.nodeMemoryKiB { try Bounds.check(value, Bounds.kib, "nodeMemoryKiB") }
            let spec = HostSpec(name: body.name, cpuCores: body.cpuCores, cpuMHzPerCore: body.cpuMHzPerCore ?? 2000,
                                nodes: body.nodeMemoryKiB.map { NUMANodeSpec(memoryKiB: $0) }, simulated: body.simulated ?? true)
            try await engine.audited("host.add", subject: spec.name, actor: context.actor) {
                try await engine.onBlockingThread { try placement.addHost(spec) }
            }
            return try json(spec, status: .created)
        }
        on(.post, "/v1/placement/images") { request, context in
            var request = request
            let body = try await request.decodeStrict(PlacementImageRequest.self)
            try Bounds.name(body.name, "name")
            try Bounds.check(body.parentMemoryKiB, Bounds.kib, "parentMemoryKiB")
            try Bounds.check(body.growthPerChildKiB, Bounds.kib, "growthPerChildKiB")
            try Bounds.check(body.cpuMHzPerChild, Bounds.mhz, "cpuMHzPerChild")
            let cost = ImageCost(name: body.name, parentMemoryKiB: body.parentMemoryKiB, growthPerChildKiB: body.growthPerChildKiB,
                                 cpuMHzPerChild: body.cpuMHzPerChild)
            try await engine.audited("placement.image.add", subject: cost.name, actor: context.actor) {
                try await engine.onBlockingThread { try placement.addImage(cost) }
            }
            return try json(cost, status: .created)
        }
        on(.post, "/v1/placement/warm-parents") { request, context in
            var request = request
            let body = try await request.decodeStrict(WarmParentSiteRequest.self)
            try Bounds.name(body.host, "host")
            try Bounds.name(body.image, "image")
            try Bounds.check(body.node, 0...63, "node")
            if let pool = body.pool { try Bounds.name(pool, "pool") }
            let site = try await engine.audited("placement.warm-parent.add", subject: "\(body.image)@\(body.host)", actor: context.actor) {
                try await engine.onBlockingThread { () throws -> WarmParentSite in
                    let image = try placement.read { core in try core.image(body.image) }
                    let site = WarmParentSite(host: body.host, image: body.image, node: body.node, memoryKiB: image.parentMemoryKiB,
                                              pool: body.pool ?? PoolTree.rootName)
                    try placement.addWarmParent(site)
                    return site
                }
            }
            return try json(site, status: .created)
        }
        on(.post, "/v1/placement/place") { request, context in
            var request = request
            let body = try await request.decodeStrict(PlaceRequest.self)
            try Bounds.name(body.pool, "pool")
            try Bounds.name(body.image, "image")
            let placed = try await engine.audited("placement.place", subject: "\(body.image) in \(body.pool)", actor: context.actor,
                                                  subjectOf: { (placed: Placement) in "\(placed.id)" }) {
                try await engine.onBlockingThread { () throws -> Placement in
                    let reserved = try placement.reserve(pool: body.pool, image: body.image, allowColdStart: body.allowColdStart ?? true)
                    return body.commit == true ? try placement.commit(reserved.id) : reserved
                }
            }
            return try json(placed, status: .created)
        }
        on(.post, "/v1/placement/placements/{id}/commit") { _, context in
            let id = try placementID(context)
            let committed = try await engine.audited("placement.commit", subject: "\(id)", actor: context.actor) {
                try await engine.onBlockingThread { try placement.commit(id) }
            }
            return try json(committed)
        }
        on(.delete, "/v1/placement/placements/{id}") { _, context in
            let id = try placementID(context)
            let released = try await engine.audited("placement.release", subject: "\(id)", actor: context.actor) {
                try await engine.onBlockingThread { try placement.release(id) }
            }
            return try json(released)
        }
        on(.get, "/v1/placement/capacity") { request, _ in
            let image = try request.string("image", maxLength: 128)
            if image?.isEmpty == true { throw APIError.invalid("image must not be empty", field: "image") }
            let whatIf = try WhatIf(request)
            let report = try await engine.onBlockingThread {
                try placement.read { core in try core.capacityReport(profile: try whatIf?.profile(core), images: image.map { [$0] }) }
            }
            return try json(report)
        }
        on(.get, "/v1/placement/capacity.svg") { _, _ in
            let report = try await engine.onBlockingThread { try placement.read { core in try core.capacityReport() } }
            return Response(status: .ok, headers: [.contentType: "image/svg+xml"], body: .init(byteBuffer: ByteBuffer(string: report.renderSVG())))
        }
    }
}

private func placementID(_ context: AgentContext) throws -> Int {
    let text = try context.parameter("id")
    guard let id = Int(text), id >= 1, id < (1 << 53) else { throw APIError.invalid("placement id \(text) is not a positive integer", field: "id") }
    return id
}

extension AgentContext {
    func parameter(_ name: String) throws -> String {
        guard let value = coreContext.parameters.get(name) else { throw APIError.invalid("missing path parameter \(name)", field: name) }
        return String(value)
    }
}

struct VersionBody: Codable {
    let version: String
    let api: String
    let kvm: Bool
    let kvmMessage: String?
}

/// An event as the API shows it (its id always present); its clients (the VCH) decode it too.
public struct EventBody: Codable, Sendable {
    public let id: Int64
    public let time: Double
    public let actor: String
    public let type: String
    public let subject: String
    public let result: String
    public let detail: String

    init(_ row: EventRow) {
        id = row.id ?? 0
        time = row.time
        actor = row.actor
        type = row.type
        subject = row.subject
        result = row.result
        detail = row.detail
    }
}

/// A JSON response: compact, sorted keys.
func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    let data = try encoder.encode(value)
    return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
}
