import Foundation
@testable import Images
import TestSupport
import Testing

/// Metadata records (pax headers, GNU long names) larger than the tar reader's 128 KiB
/// buffer, up to its 1 MiB limit: read whole, in plain and gzip'ed layers. Before, such a
/// record asked the layer's stream to fill an empty slice of the full buffer, and the
/// unpacker spun for ever (a crafted layer hung the pull). Each unpack runs on a thread of
/// its own and is waited for at most a minute, so a hang fails the test instead of the suite.
@Suite struct LargeMetadataTests {
    enum Outcome: Sendable { case unpacked, refused(String), hung }

    static func unpack(_ layer: [UInt8], in fixture: UnpackFixture) -> Outcome {
        let done = DispatchSemaphore(value: 0)
        let outcome = LockedOutcome()
        let thread = Thread {
            do {
                try fixture.unpack([layer])
                outcome.set(.unpacked)
            } catch {
                outcome.set(.refused("\(error)"))
            }
            done.signal()
        }
        thread.stackSize = 4 << 20
        thread.start()
        guard done.wait(timeout: .now() + 60) == .success else { return .hung }
        return outcome.get()
    }

    final class LockedOutcome: @unchecked Sendable {
        // @unchecked Sendable: `value` is read and written only under `lock`.
        private let lock = NSLock()
        private var value = Outcome.hung
        func set(_ outcome: Outcome) { lock.withLock { value = outcome } }
        func get() -> Outcome { lock.withLock { value } }
    }

    @Test(arguments: [false, true])
    func aPaxRecordOverTheBufferIsReadWhole(gzip: Bool) throws {
        let fixture = try UnpackFixture()
        defer { fixture.remove() }
        var tar = TarWriter()
        // 300 KiB of comment, then the name the entry takes.
        tar.pax([("comment", String(repeating: "a", count: 300 * 1024)), ("path", "named-by-a-big-pax.txt")])
        tar.add("ignored", content: Array("big pax\n".utf8))
        tar.add("after.txt", content: Array("after\n".utf8))
        let layer = gzip ? try gzipped(tar.finished()) : tar.finished()
        let outcome = Self.unpack(layer, in: fixture)
        guard case .unpacked = outcome else {
            Issue.record("not unpacked: \(outcome)")
            return
        }
        #expect(fixture.text("named-by-a-big-pax.txt") == "big pax\n")
        #expect(fixture.text("after.txt") == "after\n")
        #expect(!fixture.exists("ignored"))
    }

    @Test func aLongNameOverTheBufferIsRefusedByName() throws {
        let fixture = try UnpackFixture()
        defer { fixture.remove() }
        var tar = TarWriter()
        tar.longName(String(repeating: "n/", count: 100 * 1024))
        tar.add("ignored", content: Array("x\n".utf8))
        switch Self.unpack(tar.finished(), in: fixture) {
        case .refused(let message):
            // Refused for what it is, and the 200 KiB name cut short in the message (logs, API answers).
            #expect(message.contains("path is over 4096 bytes"), "\(message.prefix(400))")
            #expect(message.utf8.count < 400 && message.contains("(204800 bytes)"), "\(message.prefix(400))")
        case .unpacked: Issue.record("a 200 KiB name was unpacked")
        case .hung: Issue.record("the unpacker hung on a 200 KiB long name")
        }
        #expect(fixture.outsideUntouched)
    }

    @Test func aRecordOverTheLimitIsRefusedWithTheLimit() throws {
        let fixture = try UnpackFixture()
        defer { fixture.remove() }
        var tar = TarWriter()
        tar.pax([("comment", String(repeating: "b", count: (1 << 20) + 10))])
        tar.add("ignored", content: Array("x\n".utf8))
        switch Self.unpack(tar.finished(), in: fixture) {
        case .refused(let message): #expect(message.contains("over the 1048576-byte limit"), "\(message)")
        case .unpacked: Issue.record("a metadata record over 1 MiB was read")
        case .hung: Issue.record("the unpacker hung")
        }
    }
}
