import Foundation
import Synchronization

/// A pull in flight, as `ImagePuller.progress()` reports it: which phase it is in and how
/// many of its layers' bytes have arrived.
public struct PullProgress: Codable, Sendable, Equatable {
    public var reference: String
    public var startedAt: Double
    /// "manifest" (manifest and config), "layers" (downloading), "unpacking".
    public var phase: String
    /// Layers to download: those the blob store does not hold yet.
    public var layers: Int
    public var bytesTotal: Int64
    public var bytesDone: Int64
}

/// The pulls in flight, each under a key of its own.
final class PullBoard: Sendable {
    private let pulls = Mutex<(next: Int, entries: [Int: PullProgress])>((0, [:]))

    func begin(_ reference: String) -> Int {
        pulls.withLock { pulls in
            pulls.next += 1
            pulls.entries[pulls.next] = PullProgress(reference: reference, startedAt: Date().timeIntervalSince1970, phase: "manifest",
                                                     layers: 0, bytesTotal: 0, bytesDone: 0)
            return pulls.next
        }
    }

    func update(_ key: Int, _ change: (inout PullProgress) -> Void) {
        pulls.withLock { pulls in
            if var entry = pulls.entries[key] {
                change(&entry)
                pulls.entries[key] = entry
            }
        }
    }

    func end(_ key: Int) { _ = pulls.withLock { $0.entries.removeValue(forKey: key) } }

    var all: [PullProgress] { pulls.withLock { $0.entries.sorted { $0.key < $1.key }.map(\.value) } }
}
