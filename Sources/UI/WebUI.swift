import API
import Foundation
import Hummingbird
import Logging
import Mustache

/// The management web UI: server-rendered pages (Mustache templates compiled into the
/// binary) over the host agent's own API, served by `vmfork serve` on its TCP listener
/// under /ui. It signs people in with the API's bearer tokens (a form that sets an HttpOnly,
/// SameSite=Strict cookie) and makes every read and every action through `LocalAgentAPI`,
/// on behalf of the token signed in, so what it shows is what the API answers, and the
/// event log records who acted.
public struct WebUI: AgentWebFrontEnd {
    public let pathPrefix = "/ui"
    static let cookieName = "vmfork_session"
    let library: MustacheLibrary
    let logger: Logger

    public init(logger: Logger) throws {
        var library = MustacheLibrary()
        for (name, text) in Templates.all {
            do {
                try library.register(text, named: name)
            } catch {
                throw UIError("template \(name) does not parse: \(error)")
            }
        }
        self.library = library
        self.logger = logger
    }

    public func register<Context: RequestContext>(on router: Router<Context>, api: LocalAgentAPI, tokens: TokenFile) {
        let pages = Pages(ui: self, api: api, tokens: tokens)
        router.get("/") { _, _ in Response.redirect(to: "/ui/") }
        router.get("/ui/static/live.js") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/javascript; charset=utf-8", .cacheControl: "no-cache"],
                     body: .init(byteBuffer: ByteBuffer(string: Assets.liveScript)))
        }
        router.get("/ui/login") { request, _ in pages.loginPage(message: nil, next: Pages.query(request, "next")) }
        router.post("/ui/login") { request, _ in
            guard Self.sameOrigin(request) else { return Self.crossOrigin() }
            return try await pages.login(request)
        }
        router.post("/ui/logout") { _, _ in pages.logout() }

        // Every other page needs a session; `signedIn` hands over the actor it acts as.
        func page(_ path: RouterPath, method: HTTPRequest.Method = .get,
                  _ handler: @escaping @Sendable (Request, Context, String) async throws -> Response) {
            router.on(path, method: method) { request, context in
                // SameSite=Strict keeps the cookie off other sites' posts; the Origin check is a second lock.
                if method != .get, !Self.sameOrigin(request) { return Self.crossOrigin() }
                guard let actor = pages.actor(of: request) else {
                    if method == .get { return Response.redirect(to: "/ui/login?next=\(Form.escape(request.uri.path))") }
                    return pages.loginPage(message: "Your session has ended; sign in again.", next: nil, status: .unauthorized)
                }
                return try await handler(request, context, actor)
            }
        }
        page("/ui/") { request, _, actor in await pages.overview(request, actor: actor) }
        page("/ui/containers") { request, _, actor in await pages.containers(request, actor: actor) }
        page("/ui/containers/:id") { _, context, actor in await pages.container(try context.parameter("id"), actor: actor) }
        page("/ui/containers/:id/logs") { _, context, actor in await pages.logStream(try context.parameter("id"), actor: actor) }
        page("/ui/containers/:id/confirm") { request, context, actor in
            await pages.confirmContainer(try context.parameter("id"), action: Pages.query(request, "action"), actor: actor)
        }
        page("/ui/containers/:id/act", method: .post) { request, context, actor in
            try await pages.actOnContainer(request, id: try context.parameter("id"), actor: actor)
        }
        page("/ui/images") { request, _, actor in await pages.images(request, actor: actor) }
        page("/ui/images/pulls") { _, _, actor in await pages.pulls(actor: actor) }
        page("/ui/images/pull", method: .post) { request, _, actor in try await pages.pull(request, actor: actor) }
        page("/ui/parents/:id/confirm") { _, context, actor in await pages.confirmEvict(try context.parameter("id"), actor: actor) }
        page("/ui/parents/:id/evict", method: .post) { _, context, actor in await pages.evict(try context.parameter("id"), actor: actor) }
        page("/ui/capacity") { request, _, actor in await pages.capacity(request, actor: actor) }
        page("/ui/events") { request, _, actor in await pages.events(request, actor: actor) }
        page("/ui/events/stream") { request, _, actor in await pages.eventStream(request, actor: actor) }
        page("/ui/vchs") { request, _, actor in await pages.vchs(request, actor: actor) }
        page("/ui/vchs/new") { _, _, actor in await pages.vchWizard(form: [:], errors: [:], message: nil, actor: actor) }
        page("/ui/vchs", method: .post) { request, _, actor in try await pages.createVCH(request, actor: actor) }
        page("/ui/vchs/:name") { request, context, actor in
            await pages.vch(try context.parameter("name"), actor: actor, created: Pages.query(request, "created") == "1",
                            message: Pages.query(request, "message").nilIfEmpty)
        }
        page("/ui/vchs/:name/confirm") { _, context, actor in await pages.confirmDeleteVCH(try context.parameter("name"), actor: actor) }
        page("/ui/vchs/:name/delete", method: .post) { request, context, actor in
            try await pages.deleteVCH(request, name: try context.parameter("name"), actor: actor)
        }
    }

    /// A form post from a page of this listener: no Origin header (an older browser, curl), or
    /// one naming the host the request was sent to.
    static func sameOrigin(_ request: Request) -> Bool {
        guard let origin = request.headers[.origin] else { return true }
        guard let authority = request.head.authority else { return false }
        return origin == "http://\(authority)" || origin == "https://\(authority)"
    }

    static func crossOrigin() -> Response {
        html("<p>Refused: this form was posted from another site.</p>", status: .forbidden)
    }

    /// A page in the layout: `template` rendered with `view`, inside the navigation.
    func render(_ template: String, _ view: Any, title: String, section: String, status: HTTPResponse.Status = .ok, signedIn: Bool = true) -> Response {
        let body = library.render(view, withTemplate: template) ?? "<p>template \(template) is missing</p>"
        let nav = Navigation.items.map { NavItem(href: $0.href, label: $0.label, current: $0.section == section) }
        let page = library.render(Layout(title: title, body: body, nav: signedIn ? nav : [], signedIn: signedIn), withTemplate: "layout") ?? body
        return Self.html(page, status: status)
    }

    /// Only the live part of a page (what live.js swaps in when something changed).
    func fragment(_ template: String, _ view: Any) -> Response {
        Self.html(library.render(view, withTemplate: template) ?? "", status: .ok)
    }

    static func html(_ text: String, status: HTTPResponse.Status) -> Response {
        Response(status: status, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                 body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

struct Layout {
    let title: String
    let body: String
    let nav: [NavItem]
    let signedIn: Bool
}

struct NavItem {
    let href: String
    let label: String
    let current: Bool
}

enum Navigation {
    static let items: [(href: String, label: String, section: String)] = [
        ("/ui/", "Overview", "overview"), ("/ui/containers", "Containers", "containers"), ("/ui/images", "Warm parents and images", "images"),
        ("/ui/capacity", "Capacity", "capacity"), ("/ui/events", "Events", "events"), ("/ui/vchs", "VCHs", "vchs"),
    ]
}

struct UIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension RequestContext {
    func parameter(_ name: String) throws -> String {
        guard let value = parameters.get(name) else { throw HTTPError(.badRequest, message: "missing path parameter \(name)") }
        return value
    }
}

extension Response {
    static func redirect(to location: String) -> Response {
        Response(status: .seeOther, headers: [.location: location, .cacheControl: "no-store"])
    }
}

/// application/x-www-form-urlencoded bodies and query strings.
enum Form {
    static func parse(_ text: String) -> [String: String] {
        var fields: [String: String] = [:]
        for pair in text.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = decode(String(parts[0]))
            let value = parts.count > 1 ? decode(String(parts[1])) : ""
            if !key.isEmpty { fields[key] = value }
        }
        return fields
    }

    static func decode(_ text: String) -> String {
        text.replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? text
    }

    /// Percent-escapes a query value or a path segment.
    static func escape(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~/")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }

    static func escapeComponent(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }

    /// The body of a form post (at most 64 KiB).
    static func body(_ request: Request) async throws -> [String: String] {
        var request = request
        let buffer = try await request.collectBody(upTo: 64 << 10)
        return parse(String(buffer: buffer))
    }
}
