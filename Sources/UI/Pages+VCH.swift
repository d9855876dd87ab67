import API
import Engine
import Foundation
import Hummingbird
import Placement

extension Pages {
    struct VCHView {
        let name: String
        let pool: String
        let state: String
        let failure: String?
        let dockerHost: String
        let dockerCommand: String
        let tokenFile: String?
        let containers: Int
        let created: String
        let href: String
    }

    static func vchView(_ info: VCHInfo) -> VCHView {
        VCHView(name: info.name, pool: info.pool, state: info.state, failure: info.failure, dockerHost: info.dockerHost, dockerCommand: info.dockerCommand,
                tokenFile: info.tokenFile, containers: info.containers, created: Format.time(info.createdAt),
                href: "/ui/vchs/\(Form.escapeComponent(info.name))")
    }

    struct VCHsView {
        let vchs: [VCHView]
        let empty: Bool
        let error: String?
        let message: String?
        let liveSource: String
    }

    func vchs(_ request: Request, actor: String) async -> Response {
        let list = await get("/v1/vchs", as: [VCHInfo].self, actor: actor)
        let views = ((try? list.get()) ?? []).map(Self.vchView)
        let view = VCHsView(vchs: views, empty: views.isEmpty, error: list.failureMessage, message: Self.query(request, "message").nilIfEmpty,
                            liveSource: "/ui/vchs?fragment=1")
        if Self.wantsFragment(request) { return ui.fragment("vchs-table", view) }
        return ui.render("vchs", view, title: "VCHs", section: "vchs")
    }

    struct VCHDetailView {
        let vch: VCHView?
        let created: Bool
        let containers: [ContainerView]
        let error: String?
        let message: String?
    }

    func vch(_ name: String, actor: String, created: Bool = false, message: String? = nil) async -> Response {
        let found = await get("/v1/vchs/\(Form.escapeComponent(name))", as: VCHInfo.self, actor: actor)
        guard case .success(let info) = found else {
            return ui.render("vch", VCHDetailView(vch: nil, created: false, containers: [], error: found.failureMessage, message: nil),
                             title: "VCH \(name)", section: "vchs", status: .notFound)
        }
        let label = Form.escapeComponent("\(VCHRegistry.ownerLabel)=\(name)")
        let now = Date().timeIntervalSince1970
        let containers = ((try? await get("/v1/containers?label=\(label)&memory=true", as: [ContainerInfo].self, actor: actor).get()) ?? [])
            .sorted { $0.createdAt > $1.createdAt }.map { ContainerView($0, now: now) }
        let view = VCHDetailView(vch: Self.vchView(info), created: created, containers: containers, error: nil, message: message)
        return ui.render("vch", view, title: "VCH \(name)", section: "vchs")
    }

    // MARK: The create wizard

    struct FieldView {
        let value: String
        let error: String?
    }

    struct WizardView {
        let name: FieldView
        let existingPool: Bool
        let newPool: Bool
        let pools: [Option]
        let poolError: String?
        let newPoolName: FieldView
        let reservation: FieldView
        let limit: FieldView
        let shares: FieldView
        let expandable: Bool
        let unixListen: Bool
        let tcpListen: Bool
        let port: FieldView
        let listenError: String?
        let images: [Option]
        let warmImageError: String?
        let parents: FieldView
        let message: String?
        let hasErrors: Bool
    }

    func vchWizard(form: [String: String], errors: [String: String], message: String?, actor: String,
                   status: HTTPResponse.Status = .ok) async -> Response {
        let report = try? await get("/v1/placement/capacity", as: CapacityReport.self, actor: actor).get()
        let images = ((try? await get("/v1/images", as: [ImageRecord].self, actor: actor).get()) ?? []).map(\.name).sorted()
        let choice = form["poolChoice"] ?? ((report?.pools.count ?? 0) > 1 ? "existing" : "new")
        let selectedPool = form["pool"] ?? ""
        let warm = form["warmImage"] ?? ""
        func field(_ name: String, _ fallback: String = "") -> FieldView { FieldView(value: form[name] ?? fallback, error: errors[name]) }
        let view = WizardView(
            name: field("name"), existingPool: choice == "existing", newPool: choice != "existing",
            pools: (report?.pools ?? []).map { Option(value: $0.name, label: "\($0.indent)\($0.name) (free \(Format.mib(kib: $0.free.memoryKiB)))",
                                                       selected: $0.name == selectedPool) },
            poolError: errors["pool"], newPoolName: field("newPool"), reservation: field("reservationMiB", "0"), limit: field("limitMiB"),
            shares: field("shares", "1000"), expandable: form.isEmpty || form["expandable"] == "on",
            unixListen: (form["listen"] ?? "unix") == "unix", tcpListen: form["listen"] == "tcp", port: field("port"), listenError: errors["listen"],
            images: [Option(value: "", label: "none", selected: warm.isEmpty)] + images.map { Option(value: $0, label: $0, selected: $0 == warm) },
            warmImageError: errors["warmImage"], parents: field("parents", "1"), message: message, hasErrors: !errors.isEmpty || message != nil)
        return ui.render("vch-wizard", view, title: "Create a VCH", section: "vchs", status: status)
    }

    struct PoolBody: Encodable, Sendable {
        let name: String
        let memoryReservationKiB: Int
        let memoryLimitKiB: Int?
        let shares: Int
        let expandable: Bool
    }

    struct VCHBody: Encodable, Sendable {
        let name: String
        let pool: String
        let listen: String
    }

    struct ParentBody: Encodable, Sendable {
        let image: String
        let parents: Int
    }

    /// The wizard's form: the new pool first (when asked), then the VCH, then its warm parents;
    /// each refusal of the API is shown next to the field it names.
    func createVCH(_ request: Request, actor: String) async throws -> Response {
        var form = try await Form.body(request)
        for key in form.keys { form[key] = form[key]?.trimmingCharacters(in: .whitespaces) }
        var errors: [String: String] = [:]
        let name = form["name"] ?? ""
        if name.isEmpty { errors["name"] = "Give the VCH a name: 1-30 letters, digits, '_' or '-'." }
        func whole(_ key: String, _ what: String, range: ClosedRange<Int>, optional: Bool = false) -> Int? {
            let text = form[key] ?? ""
            if text.isEmpty && optional { return nil }
            guard let value = Int(text), range.contains(value) else {
                errors[key] = "\(what) must be a whole number from \(range.lowerBound) to \(range.upperBound)."
                return nil
            }
            return value
        }
        let newPool = form["poolChoice"] != "existing"
        var pool = form["pool"] ?? ""
        var reservation = 0, limit: Int?, shares = 1000
        if newPool {
            pool = form["newPool"] ?? ""
            if pool.isEmpty { errors["newPool"] = "Name the new pool." }
            reservation = whole("reservationMiB", "The reservation (MiB)", range: 0...(1 << 30)) ?? 0
            limit = whole("limitMiB", "The limit (MiB)", range: 1...(1 << 30), optional: true)
            shares = whole("shares", "Shares", range: 1...1_000_000) ?? 1000
        } else if pool.isEmpty {
            errors["pool"] = "Pick a pool."
        }
        var listen = "unix"
        if form["listen"] == "tcp" {
            if let port = whole("port", "The port", range: 1024...65535) { listen = "tcp://127.0.0.1:\(port)" }
        }
        let warmImage = form["warmImage"] ?? ""
        let parents = warmImage.isEmpty ? 0 : (whole("parents", "Warm parents", range: 1...16) ?? 0)
        guard errors.isEmpty else {
            return await vchWizard(form: form, errors: errors, message: "Some fields need another look.", actor: actor, status: .badRequest)
        }
        if newPool {
            let answer = await api.call(.post, "/v1/placement/pools", json: PoolBody(name: pool, memoryReservationKiB: reservation * 1024,
                                                                                   memoryLimitKiB: limit.map { $0 * 1024 }, shares: shares,
                                                                                   expandable: form["expandable"] == "on"), actor: actor)
            if !answer.ok {
                let (message, field) = answer.error ?? ("status \(answer.status)", nil)
                let key = switch field {
                case "name": "newPool"
                case "memoryReservationKiB": "reservationMiB"
                case "memoryLimitKiB": "limitMiB"
                case "shares": "shares"
                default: message.contains("limit") ? "limitMiB" : message.contains("reserv") ? "reservationMiB" : "newPool"
                }
                errors[key] = message
                return await vchWizard(form: form, errors: errors, message: "The pool was not created.", actor: actor, status: .badRequest)
            }
        }
        let created = await api.call(.post, "/v1/vchs", json: VCHBody(name: name, pool: pool, listen: listen), actor: actor)
        guard created.ok else {
            let (message, field) = created.error ?? ("status \(created.status)", nil)
            let key = switch field {
            case "pool": newPool ? "newPool" : "pool"
            case "listen": form["listen"] == "tcp" ? "port" : "listen"
            default: "name"
            }
            errors[key] = message
            var again = form
            if newPool {  // the pool exists now: offer it as the existing one
                again["poolChoice"] = "existing"
                again["pool"] = pool
            }
            return await vchWizard(form: again, errors: errors, message: newPool ? "The VCH was not created (pool \(pool) was)." : "The VCH was not created.",
                                   actor: actor, status: .badRequest)
        }
        var message: String?
        if !warmImage.isEmpty {
            let answer = await api.call(.post, "/v1/parents", json: ParentBody(image: warmImage, parents: parents), actor: actor)
            message = answer.ok ? "Keeping \(parents) warm parent(s) of \(warmImage)."
                : "The VCH runs, but its warm parents of \(warmImage) were refused: \(answer.error?.message ?? "status \(answer.status)")"
        }
        var location = "/ui/vchs/\(Form.escapeComponent(name))?created=1"
        if let message { location += "&message=\(Form.escapeComponent(message))" }
        return Response.redirect(to: location)
    }

    func confirmDeleteVCH(_ name: String, actor: String, error: String? = nil) async -> Response {
        let info = try? await get("/v1/vchs/\(Form.escapeComponent(name))", as: VCHInfo.self, actor: actor).get()
        let count = info?.containers ?? 0
        let question = "Delete VCH \(name)? Its endpoint stops listening. "
            + (count > 0 ? "It has \(count) container(s): the agent refuses unless you also tick “remove its containers”." : "It has no containers.")
        let view = ConfirmView(title: "Delete VCH \(name)", question: question, action: "/ui/vchs/\(Form.escapeComponent(name))/delete", verb: "Delete",
                               back: "/ui/vchs", fields: [], forceOption: count > 0, error: error)
        return ui.render("confirm", view, title: view.title, section: "vchs", status: error == nil ? .ok : .conflict)
    }

    func deleteVCH(_ request: Request, name: String, actor: String) async throws -> Response {
        let form = try await Form.body(request)
        let force = form["force"] == "on"
        let answer = await api.call(.delete, "/v1/vchs/\(Form.escapeComponent(name))?force=\(force)", actor: actor)
        guard answer.ok else { return await confirmDeleteVCH(name, actor: actor, error: answer.error?.message ?? "status \(answer.status)") }
        return Response.redirect(to: "/ui/vchs?message=\(Form.escapeComponent("Deleted VCH \(name)."))")
    }
}

extension CapacityReport.Pool {
    var indent: String { String(repeating: "· ", count: max(0, depth)) }
}
