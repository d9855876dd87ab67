import API
import Engine
import Foundation
import Hummingbird

extension Pages {
    struct ImageView {
        let name: String
        let rootfs: String
        let executable: String
        let command: String
        let created: String
        let forkPoint: String
        let parents: [ParentView]
        let hasParents: Bool
    }

    struct ParentView {
        let id: String
        let image: String
        let state: String
        let failure: String?
        let forkPoint: String
        let memoryMiB: Int
        let parents: String
        let readyVMs: String
        let children: Int
        let poolMisses: Int
        let parentMemory: String
        let childPrivate: String
        let childShared: String
        let saved: String
        let evictHref: String
    }

    struct ImagesView {
        let images: [ImageView]
        let orphanParents: [ParentView]
        let hasOrphans: Bool
        let empty: Bool
        let error: String?
        let message: String?
        let reference: String
        let liveSource: String
    }

    func images(_ request: Request, actor: String) async -> Response {
        let images = await get("/v1/images", as: [ImageRecord].self, actor: actor)
        let parents = await get("/v1/parents?sharing=true", as: [ParentInfo].self, actor: actor)
        let parentViews = ((try? parents.get()) ?? []).map { parent in
            ParentView(id: parent.id, image: parent.policy.image, state: parent.state, failure: parent.failure, forkPoint: parent.policy.forkPoint.rawValue,
                       memoryMiB: parent.policy.memoryMiB, parents: "\(parent.parentsReady) of \(parent.policy.parents)",
                       readyVMs: "\(parent.readyVMsNow) (keeps \(parent.policy.readyVMs) per parent)", children: parent.liveChildren,
                       poolMisses: parent.poolMisses, parentMemory: parent.sharing.map { Format.mib(bytes: $0.parentBytes) } ?? "",
                       childPrivate: parent.sharing.map { Format.mib(bytes: $0.childPrivateBytesMedian) } ?? "",
                       childShared: parent.sharing.map { Format.mib(bytes: $0.childSharedBytesMedian) } ?? "",
                       saved: parent.sharing.map { Format.mib(bytes: $0.savedBytes) } ?? "",
                       evictHref: "/ui/parents/\(Form.escapeComponent(parent.id))/confirm")
        }
        let imageList = ((try? images.get()) ?? []).sorted { $0.name < $1.name }
        let names = Set(imageList.map(\.name))
        let views = imageList.map { image in
            let own = parentViews.filter { $0.image == image.name }
            return ImageView(name: image.name, rootfs: image.rootfs, executable: image.executable, command: Format.command(image.arguments),
                             created: Format.time(image.createdAt), forkPoint: image.defaultForkPoint?.rawValue ?? "", parents: own, hasParents: !own.isEmpty)
        }
        let orphans = parentViews.filter { !names.contains($0.image) }
        let view = ImagesView(images: views, orphanParents: orphans, hasOrphans: !orphans.isEmpty, empty: views.isEmpty,
                              error: images.failureMessage ?? parents.failureMessage, message: Self.query(request, "message").nilIfEmpty,
                              reference: Self.query(request, "reference"), liveSource: "/ui/images?fragment=1")
        if Self.wantsFragment(request) { return ui.fragment("images-tables", view) }
        return ui.render("images", view, title: "Warm parents and images", section: "images")
    }

    /// The API's pulls in flight, as it answers them (the pull form's progress reads it).
    func pulls(actor: String) async -> Response {
        let answer = await api.call(.get, "/v1/pulls", actor: actor)
        return Response(status: .init(code: answer.status), headers: [.contentType: "application/json", .cacheControl: "no-store"],
                        body: .init(byteBuffer: ByteBuffer(bytes: answer.body)))
    }

    struct PullBody: Encodable, Sendable {
        let reference: String
        let name: String?
    }

    /// Pulls an image (the API's pull, which answers when the image is unpacked and registered).
    func pull(_ request: Request, actor: String) async throws -> Response {
        let form = try await Form.body(request)
        let reference = (form["reference"] ?? "").trimmingCharacters(in: .whitespaces)
        let name = (form["name"] ?? "").trimmingCharacters(in: .whitespaces)
        guard !reference.isEmpty else {
            return Response.redirect(to: "/ui/images?message=\(Form.escapeComponent("Give an image reference to pull, e.g. 127.0.0.1:5000/busybox:latest."))")
        }
        let started = ContinuousClock.now
        let answer = await api.call(.post, "/v1/images/pull", json: PullBody(reference: reference, name: name.nilIfEmpty), actor: actor)
        let seconds = (ContinuousClock.now - started).components
        let took = String(format: "%.1f s", Double(seconds.seconds) + Double(seconds.attoseconds) / 1e18)
        let message = answer.ok ? "Pulled \(reference) in \(took)." : "Pull of \(reference) failed: \(answer.error?.message ?? "status \(answer.status)")"
        return Response.redirect(to: "/ui/images?message=\(Form.escapeComponent(message))&reference=\(Form.escapeComponent(reference))")
    }

    func confirmEvict(_ id: String, actor: String) async -> Response {
        let parent = try? await get("/v1/parents/\(Form.escapeComponent(id))", as: ParentInfo.self, actor: actor).get()
        let children = parent?.liveChildren ?? 0
        let question = "Evict warm parent \(id)\(parent.map { " of image \($0.policy.image)" } ?? "")? Its parents and their ready VMs are released; "
            + (children > 0 ? "it has \(children) live children, so the agent will refuse until they end." : "it has no live children.")
        let view = ConfirmView(title: "Evict \(id)", question: question, action: "/ui/parents/\(Form.escapeComponent(id))/evict", verb: "Evict",
                               back: "/ui/images", fields: [], forceOption: false, error: nil)
        return ui.render("confirm", view, title: view.title, section: "images")
    }

    func evict(_ id: String, actor: String) async -> Response {
        let answer = await api.call(.delete, "/v1/parents/\(Form.escapeComponent(id))", actor: actor)
        let message = answer.ok ? "Evicted warm parent \(id)." : "Could not evict \(id): \(answer.error?.message ?? "status \(answer.status)")"
        return Response.redirect(to: "/ui/images?message=\(Form.escapeComponent(message))")
    }
}
