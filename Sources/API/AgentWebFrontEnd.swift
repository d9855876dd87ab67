import Foundation
import Hummingbird

/// A web front end the daemon serves on its TCP listener beside the API (the UI module; the
/// vmfork executable wires it in, so the API does not depend on it). Requests under
/// `pathPrefix` (and "/", which it may redirect) skip the bearer-token check: the front end
/// signs people in with the same tokens and checks its own session cookie on every request.
public protocol AgentWebFrontEnd: Sendable {
    /// "/ui": where its pages live.
    var pathPrefix: String { get }

    /// Adds its routes. `api` answers as the API does; `tokens` are the TCP listener's.
    func register<Context: RequestContext>(on router: Router<Context>, api: LocalAgentAPI, tokens: TokenFile)
}
