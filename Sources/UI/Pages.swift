import API
import Engine
import Foundation
import Hummingbird
import Placement

/// The pages' handlers: each reads the API (through `LocalAgentAPI`) and renders a template.
struct Pages: Sendable {
    let ui: WebUI
    let api: LocalAgentAPI
    let tokens: TokenFile

    // MARK: Session

    /// "token:NAME" for a request whose session cookie holds one of the API's tokens.
    func actor(of request: Request) -> String? {
        guard let value = Self.cookie(WebUI.cookieName, in: request), let name = tokens.name(of: value) else { return nil }
        return "token:\(name)"
    }

    static func cookie(_ name: String, in request: Request) -> String? {
        for header in request.headers[values: .cookie] {
            for part in header.split(separator: ";") {
                let pair = part.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
                if pair.count == 2, pair[0] == name { return String(pair[1]) }
            }
        }
        return nil
    }

    struct LoginView {
        let message: String?
        let next: String
    }

    func loginPage(message: String?, next: String?, status: HTTPResponse.Status = .ok) -> Response {
        ui.render("login", LoginView(message: message, next: Self.safeNext(next)), title: "Sign in", section: "", status: status, signedIn: false)
    }

    /// Only a page of the UI itself (no open redirect).
    static func safeNext(_ next: String?) -> String {
        guard let next, next.hasPrefix("/ui/"), !next.contains("//"), !next.contains("\\") else { return "/ui/" }
        return next
    }

    func login(_ request: Request) async throws -> Response {
        let form = try await Form.body(request)
        let token = (form["token"] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty, let name = tokens.name(of: token) else {
            _ = await api.call(.post, "/v1/events", json: ClientEvents(type: "ui.login", subject: "web UI", result: "wrong token"), actor: "ui:signed-out")
            return loginPage(message: "That token is not one of this agent's (see api-token in its state folder).", next: form["next"],
                             status: .unauthorized)
        }
        _ = await api.call(.post, "/v1/events", json: ClientEvents(type: "ui.login", subject: "web UI", result: "ok"), actor: "token:\(name)")
        var response = Response.redirect(to: Self.safeNext(form["next"]))
        response.headers[.setCookie] = "\(WebUI.cookieName)=\(token); Path=/ui; HttpOnly; SameSite=Strict"
        return response
    }

    func logout() -> Response {
        var response = Response.redirect(to: "/ui/login")
        response.headers[.setCookie] = "\(WebUI.cookieName)=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"
        return response
    }

    // MARK: Reading the API

    /// The API's answer decoded, or the reason it could not be read (shown on the page).
    func get<T: Decodable>(_ path: String, as type: T.Type, actor: String) async -> Result<T, UIError> {
        let answer = await api.call(.get, path, actor: actor)
        guard answer.ok else { return .failure(UIError("\(path): \(answer.error?.message ?? "status \(answer.status)")")) }
        do {
            return .success(try answer.decode(T.self))
        } catch {
            return .failure(UIError("\(path): the answer does not decode: \(error)"))
        }
    }

    func text(_ path: String, actor: String) async -> String? {
        let answer = await api.call(.get, path, actor: actor)
        return answer.ok ? String(decoding: answer.body, as: UTF8.self) : nil
    }

    static func wantsFragment(_ request: Request) -> Bool { query(request, "fragment") == "1" }

    /// A query parameter as a browser's form sends it ('+' for space, percent escapes).
    static func query(_ request: Request, _ name: String) -> String {
        (Form.parse(request.uri.query ?? "")[name] ?? "").trimmingCharacters(in: .whitespaces)
    }
}

/// One client event for POST /v1/events (recorded as client.TYPE).
struct ClientEvents: Encodable, Sendable {
    struct Event: Encodable, Sendable {
        let type: String
        let subject: String
        let result: String
    }
    let events: [Event]
    init(type: String, subject: String, result: String) { events = [Event(type: type, subject: subject, result: result)] }
}
