import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Synchronization

/// One HTTP client session (Foundation's URLSession) whose response bodies stream to a
/// sink as they arrive, so a body can be hashed and written to a file, and cut off the moment
/// it passes its limit: a registry that lies about a size cannot fill the disk or memory.
final class HTTPTransfer: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    // @unchecked: the only state, `tasks`, is behind a Mutex; `session` is set once in init.

    struct Head: Sendable {
        let status: Int
        let headers: [String: String]

        func header(_ name: String) -> String? { headers[name.lowercased()] }
    }

    /// What a transfer does with the body: gets each piece, returns an error to stop.
    typealias Sink = @Sendable (Head, UnsafeRawBufferPointer) -> ImageError?

    private struct Pending {
        var head: Head?
        var sink: Sink
        var failure: ImageError?
        /// A 401 answered through the challenge delegate: its head is the answer.
        var challenged = false
        var continuation: CheckedContinuation<Head, any Error>
    }

    private let tasks = Mutex<[Int: Pending]>([:])
    private var session: URLSession!

    init(timeout: TimeInterval = 60) {
        super.init()
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = timeout
        configuration.httpMaximumConnectionsPerHost = 8
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        let queue = OperationQueue()
        queue.maxConcurrentOperationCount = 1
        session = URLSession(configuration: configuration, delegate: self, delegateQueue: queue)
    }

    func invalidate() { session.finishTasksAndInvalidate() }

    /// Sends `request`; the body goes to `sink`. Returns the response head once the body is done.
    func send(_ request: URLRequest, sink: @escaping Sink) async throws -> Head {
        try await withCheckedThrowingContinuation { continuation in
            let task = session.dataTask(with: request)
            tasks.withLock { $0[task.taskIdentifier] = Pending(sink: sink, continuation: continuation) }
            task.resume()
        }
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                    completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
        let head = Self.head(response as? HTTPURLResponse)
        tasks.withLock { $0[dataTask.taskIdentifier]?.head = head }
        completionHandler(.allow)
    }

    /// A 401 is answered by the registry client (its WWW-Authenticate flow), not by the
    /// session: the challenge's response is kept as the task's answer and the task ends.
    /// (Foundation on Linux waits forever on a 401 left to its default handling.)
    func urlSession(_ session: URLSession, task: URLSessionTask, didReceive challenge: URLAuthenticationChallenge,
                    completionHandler: @escaping (URLSession.AuthChallengeDisposition, URLCredential?) -> Void) {
        if let response = challenge.failureResponse as? HTTPURLResponse {
            let head = Self.head(response)
            tasks.withLock { $0[task.taskIdentifier]?.head = head; $0[task.taskIdentifier]?.challenged = true }
        }
        completionHandler(.cancelAuthenticationChallenge, nil)
    }

    private static func head(_ http: HTTPURLResponse?) -> Head {
        var headers: [String: String] = [:]
        for (key, value) in http?.allHeaderFields ?? [:] {
            if let key = key as? String, let value = value as? String { headers[key.lowercased()] = value }
        }
        return Head(status: http?.statusCode ?? 0, headers: headers)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        let entry = tasks.withLock { $0[dataTask.taskIdentifier] }
        guard let entry, entry.failure == nil, let head = entry.head else { return }
        // unsafe: the sinks (RegistryClient's) copy, hash or write the piece before returning; none keeps the pointer.
        let failure = data.withUnsafeBytes { entry.sink(head, $0) }
        if let failure {
            tasks.withLock { $0[dataTask.taskIdentifier]?.failure = failure }
            dataTask.cancel()
        }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
        guard let entry = tasks.withLock({ $0.removeValue(forKey: task.taskIdentifier) }) else { return }
        if let failure = entry.failure {
            entry.continuation.resume(throwing: failure)
        } else if entry.challenged, let head = entry.head {
            entry.continuation.resume(returning: head)
        } else if let error {
            let url = task.originalRequest?.url?.absoluteString ?? "?"
            entry.continuation.resume(throwing: ImageError.registry("request to \(url) failed: \(error.localizedDescription)"))
        } else if let head = entry.head {
            entry.continuation.resume(returning: head)
        } else {
            entry.continuation.resume(throwing: ImageError.registry("no HTTP response from \(task.originalRequest?.url?.absoluteString ?? "?")"))
        }
    }
}
