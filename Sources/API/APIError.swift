import Engine
import Foundation
import Hummingbird
import NIOCore
import Placement

/// An error as the API answers it: a status and a JSON body {code, message, field}.
struct APIError: Error, CustomStringConvertible {
    let status: HTTPResponse.Status
    let code: String
    let message: String
    var field: String?

    var description: String { message }

    init(status: HTTPResponse.Status, code: String, message: String, field: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.field = field
    }

    static func invalid(_ message: String, field: String? = nil) -> APIError {
        APIError(status: .badRequest, code: "invalid", message: message, field: field)
    }

    struct Body: Codable {
        let code: String
        let message: String
        let field: String?
    }

    /// The JSON body.
    var body: Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(Body(code: code, message: message, field: field))) ?? Data("{\"code\":\"failed\",\"message\":\"?\"}".utf8)
    }

    var response: Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// Any error thrown by a handler, the engine, placement or the HTTP layer, as the API answers it.
    init(_ error: any Error) {
        switch error {
        case let error as APIError:
            self = error
        case let error as EngineError:
            let (status, code): (HTTPResponse.Status, String) = switch error.kind {
            case .invalid: (.badRequest, "invalid")
            case .notFound: (.notFound, "not_found")
            case .conflict: (.conflict, "conflict")
            case .unavailable: (.serviceUnavailable, "unavailable")
            case .failed: (.internalServerError, "failed")
            }
            self.init(status: status, code: code, message: error.message, field: error.field)
        case let error as PlacementError:
            let (status, code): (HTTPResponse.Status, String) = switch error {
            case .unknownPool, .unknownImage, .unknownHost, .unknownPlacement: (.notFound, "not_found")
            case .duplicateName, .poolRefused, .noHostFits, .limitBelowHeld: (.conflict, "conflict")
            case .negativeValue, .reservationAboveLimit, .poolCycle, .invalid: (.badRequest, "invalid")
            }
            self.init(status: status, code: code, message: error.description)
        case is NIOTooManyBytesError:
            self.init(status: .contentTooLarge, code: "too_large", message: "the request body is over \(AgentLimits.maxBodyBytes) bytes")
        case let error as HTTPError:
            let code = switch error.status.code {
            case 404: "no_route"
            case 413: "too_large"
            case 405: "method_not_allowed"
            default: error.status.code < 500 ? "invalid" : "failed"
            }
            let message = switch error.status.code {
            case 404: "no such route"
            case 413: "the request body is over \(AgentLimits.maxBodyBytes) bytes"
            default: error.body ?? error.status.reasonPhrase
            }
            self.init(status: error.status, code: code, message: message)
        default:
            self.init(status: .internalServerError, code: "failed", message: "\(error)")
        }
    }
}

/// Turns every error into its JSON answer, and refuses requests beyond the in-flight limit.
/// A state-changing request refused before it reached the engine (malformed body, bad query,
/// too large, no such route) is recorded as "request.refused"; the engine records its own.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = AgentContext
    let inFlight: InFlightCounter
    let engine: Engine

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard inFlight.enter() else {
            return APIError(status: .tooManyRequests, code: "too_many_requests",
                            message: "over \(AgentLimits.maxRequestsInFlight) requests in flight; retry later").response
        }
        defer { inFlight.leave() }
        do {
            return try await next(request, context)
        } catch {
            let answer = APIError(error)
            if request.method != .get, !(error is EngineError), !(error is PlacementError) {
                engine.record("request.refused", subject: "\(request.method.rawValue) \(request.uri.path)", actor: context.actor,
                              result: answer.message)
            }
            return answer.response
        }
    }
}

import Synchronization

final class InFlightCounter: Sendable {
    private let count = Atomic<Int>(0)
    func enter() -> Bool {
        let now = count.wrappingAdd(1, ordering: .relaxed).newValue
        if now > AgentLimits.maxRequestsInFlight {
            count.wrappingSubtract(1, ordering: .relaxed)
            return false
        }
        return true
    }
    func leave() { count.wrappingSubtract(1, ordering: .relaxed) }
}
