@testable import Engine
import Foundation
import Testing

/// The worker protocol's hot messages, written and read by hand (`WorkerQuick`), against the
/// Codable forms the rest of the protocol uses: what one side writes by hand, the other reads
/// by hand or with JSONDecoder to the same value; a refusal comes back as the EngineError sent.
@Suite struct WorkerWireTests {
    /// Random cases; a failure shows the case's text.
    typealias Seeded = SystemRandomNumberGenerator

    static let alphabet: [String] = ["a", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\u{0}", "\u{1F}", "é", "中", "😀", "=", "{", "]"]

    static func text(_ random: inout Seeded, upTo length: Int = 12) -> String {
        (0..<Int.random(in: 0...length, using: &random)).map { _ in alphabet.randomElement(using: &random)! }.joined()
    }

    static func maybe<T>(_ random: inout Seeded, _ make: (inout Seeded) -> T) -> T? {
        Bool.random(using: &random) ? make(&random) : nil
    }

    static func info(_ random: inout Seeded) -> ContainerInfo {
        let strings = { (random: inout Seeded) in (0..<Int.random(in: 0...3, using: &random)).map { _ in text(&random) } }
        var labels: [String: String] = [:]
        for _ in 0..<Int.random(in: 0...3, using: &random) { labels[text(&random)] = text(&random) }
        return ContainerInfo(
            id: text(&random), name: text(&random), image: text(&random), state: [.created, .running, .exited].randomElement(using: &random)!,
            exitCode: maybe(&random) { Int.random(in: -300...300, using: &$0) }, exitReason: maybe(&random) { text(&$0) },
            arguments: strings(&random), environment: strings(&random), hostname: text(&random), memoryMiB: Int.random(in: 0...4096, using: &random),
            forkPoint: [.entry, .main, .stdin].randomElement(using: &random)!, labels: labels, parent: text(&random),
            pool: maybe(&random) { text(&$0) }, placementID: maybe(&random) { Int.random(in: 0...1_000_000, using: &$0) },
            createdAt: Double.random(in: 0...2e9, using: &random), startedAt: maybe(&random) { Double.random(in: 0...2e9, using: &$0) },
            finishedAt: maybe(&random) { Double.random(in: -1...1, using: &$0) }, forkMicroseconds: maybe(&random) { Double.random(in: 0...1e6, using: &$0) },
            reusedVM: maybe(&random) { Bool.random(using: &$0) }, argv0: maybe(&random) { text(&$0) }, entrypoint: maybe(&random, strings),
            cmd: maybe(&random, strings), tty: maybe(&random) { Bool.random(using: &$0) })
    }

    @Test func containersWrittenByHandReadBackAsThemselvesByHandAndByJSONDecoder() throws {
        var random = Seeded()
        for index in 0..<2_000 {
            let info = Self.info(&random)
            var writer = QuickJSON.Writer()
            #expect(info.write(into: &writer))
            let data = Data(writer.bytes)
            let shown = "case \(index): \(String(decoding: data, as: UTF8.self))"
            #expect(ContainerInfo.quick(from: data) == info, "\(shown)")
            #expect(try JSONDecoder().decode(ContainerInfo.self, from: data) == info, "\(shown)")
        }
        // What only the Codable form carries is left to it.
        var measured = Self.info(&random)
        measured.memory = ContainerMemory(residentBytes: 3, privateBytes: 1, sharedBytes: 2, limitBytes: 4, vms: 1)
        var writer = QuickJSON.Writer()
        #expect(!measured.write(into: &writer) && writer.bytes.isEmpty)
        var infinite = Self.info(&random)
        infinite.startedAt = .infinity
        #expect(!infinite.write(into: &writer))
    }

    @Test func aCreateWrittenByHandIsTheRequestJSONDecoderReads() throws {
        var random = Seeded()
        for _ in 0..<300 {
            let spec = ContainerSpec(image: Self.text(&random), name: Self.maybe(&random) { Self.text(&$0) }, arguments: [Self.text(&random)],
                                     environment: Self.maybe(&random) { [Self.text(&$0)] }, hostname: Self.text(&random),
                                     memoryMiB: Int.random(in: 1...512, using: &random), forkPoint: .main, labels: ["k": Self.text(&random)],
                                     openStdin: Self.maybe(&random) { Bool.random(using: &$0) }, stdin: Self.maybe(&random) { Self.text(&$0) },
                                     tty: Self.maybe(&random) { Bool.random(using: &$0) })
            let request = WorkerCreate(id: Self.text(&random), spec: spec, image: nil, start: Bool.random(using: &random),
                                       untilEnd: Self.maybe(&random) { Bool.random(using: &$0) },
                                       removeAtEnd: Self.maybe(&random) { Bool.random(using: &$0) },
                                       answerHead: Self.maybe(&random) { "HTTP/1.1 200 OK\r\nDate: \(Self.text(&$0))\r\n" })
            var body = QuickJSON.Writer()
            #expect(WorkerQuick.create(request, into: &body))
            let bytes = WorkerQuick.request(id: 42, op: "create") { $0.raw(body.bytes) }
            let frame = WorkerFrame(Data(bytes))
            #expect(frame.header?.id == 42 && frame.header?.op == "create" && frame.header?.event == nil)
            let quick = try #require(WorkerQuick.create(frame.member("body")), "\(String(decoding: bytes, as: UTF8.self))")
            let decoded = try JSONDecoder().decode(WorkerRequest<WorkerCreate>.self, from: Data(bytes)).body
            for read in [quick, decoded] {
                #expect(read.id == request.id && read.spec == request.spec && read.start == request.start && read.untilEnd == request.untilEnd
                        && read.removeAtEnd == request.removeAtEnd && read.answerHead == request.answerHead)
                #expect(read.image == nil)
            }
        }
        // One that carries the image's record is written and read by JSONEncoder/JSONDecoder.
        var withImage = WorkerCreate(id: "x", spec: ContainerSpec(image: "busybox"), image: ImageRecord(name: "busybox", rootfs: "/r", executable: "/bin/busybox"),
                                     start: true)
        var body = QuickJSON.Writer()
        #expect(!WorkerQuick.create(withImage, into: &body))
        withImage.image = nil
        let encoded = try JSONEncoder().encode(WorkerRequest(id: 1, op: "create", body: withImage))
        var object = try #require(try JSONSerialization.jsonObject(with: encoded) as? [String: Any])
        var inner = try #require(object["body"] as? [String: Any])
        inner["image"] = ["name": "busybox"]
        object["body"] = inner
        #expect(WorkerQuick.create(WorkerFrame(try JSONSerialization.data(withJSONObject: object)).member("body")) == nil)
    }

    @Test func exitsAndRepliesWrittenByHandAreWhatTheDaemonReads() throws {
        var random = Seeded()
        for _ in 0..<300 {
            var info = Self.info(&random)
            info.state = .exited
            let exit = WorkerExit(info: info, vmExits: Self.maybe(&random) { UInt64.random(in: 0...1 << 40, using: &$0) },
                                  pageFaults: Self.maybe(&random) { UInt64.random(in: 0...9, using: &$0) }, emulatedInstructions: 3)
            let event = WorkerFrame(Data(try #require(WorkerQuick.exitEvent(exit))))
            #expect(event.header?.id == 0 && event.header?.event == "exit")
            let read = try #require(WorkerQuick.exit(event.member("body")))
            let decoded = try JSONDecoder().decode(WorkerEventMessage<WorkerExit>.self, from: event.data).body
            for value in [read, decoded] {
                #expect(value.info == exit.info && value.vmExits == exit.vmExits && value.pageFaults == exit.pageFaults
                        && value.emulatedInstructions == exit.emulatedInstructions)
            }
            let reply = WorkerFrame(Data(try #require(WorkerQuick.reply(id: 9, info: info))))
            #expect(reply.header?.id == 9 && reply.header?.op == nil)
            let result = try #require(try WorkerQuick.result(of: reply, shard: 0, op: "create"))
            #expect(ContainerInfo.quick(result) == info)
        }
    }

    /// A run answered with its end: the started info as the result (what JSONDecoder reads
    /// too), and with it only what the exit changed: the daemon rebuilds the ended info from
    /// the two; the counters and output come as written, whatever bytes the output held (as
    /// the run's result would show them); a malformed end is an error, not a run without one.
    @Test func aRunsAnswerCarriesItsEndAndOutput() throws {
        var random = Seeded()
        for _ in 0..<300 {
            var started = Self.info(&random)
            started.state = .running
            var ended = started
            ended.state = .exited
            ended.exitCode = Int.random(in: 0...255, using: &random)
            ended.exitReason = Self.text(&random)
            ended.finishedAt = Double.random(in: 0...2e9, using: &random)
            if Bool.random(using: &random) { ended.startedAt = Double.random(in: 0...2e9, using: &random) }
            let stdout = Array(Self.text(&random, upTo: 40).utf8) + (Bool.random(using: &random) ? [0xFF, 0x0A] : [])
            var end = WorkerRunEnd(exit: WorkerExit(info: ended, vmExits: Self.maybe(&random) { UInt64.random(in: 0...99, using: &$0) }, pageFaults: 4),
                                   stdout: stdout, stderr: Self.maybe(&random) { Array(Self.text(&$0).utf8) }, removed: Bool.random(using: &random))
            // What the worker wrote of the caller's answer, and the rest (any bytes: the answer may be cut inside a character).
            end.answered = Self.maybe(&random) { Int.random(in: 0...70_000, using: &$0) }
            end.answerRest = end.answered == nil ? nil : (0..<Int.random(in: 0...40, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            let frame = WorkerFrame(Data(try #require(WorkerQuick.reply(id: 7, info: started, end: end))))
            #expect(frame.header?.id == 7)
            let node = try #require(try WorkerQuick.result(of: frame, shard: 0, op: "create"))
            let result = try #require(ContainerInfo.quick(node))
            #expect(result == started)
            #expect(try JSONDecoder().decode(WorkerReply<ContainerInfo>.self, from: frame.data).result == started)
            let read = try #require(try WorkerQuick.runEnd(of: frame, started: result, shard: 0))
            #expect(read.exit.info == ended, "\(read.exit.info) against \(ended)")
            #expect(read.exit.vmExits == end.exit.vmExits && read.exit.pageFaults == 4 && read.exit.emulatedInstructions == nil && read.removed == end.removed)
            #expect(read.stdout.map { String(decoding: $0, as: UTF8.self) } == String(decoding: stdout, as: UTF8.self))
            #expect(read.stderr.map { String(decoding: $0, as: UTF8.self) } == end.stderr.map { String(decoding: $0, as: UTF8.self) })
            #expect(read.answered == end.answered && (read.answerRest ?? []) == (end.answerRest ?? []))
            // The worker adds what it wrote to a frame made without it: the same bytes.
            if let written = end.answered {
                var without = end
                (without.answered, without.answerRest) = (nil, nil)
                let spliced = WorkerQuick.withAnswered(try #require(WorkerQuick.reply(id: 7, info: started, end: without)), written: written,
                                                       rest: end.answerRest ?? [])
                #expect(spliced == WorkerQuick.reply(id: 7, info: started, end: end))
            }
        }
        // An answer without an end has none; a malformed one is refused.
        let info = Self.info(&random)
        let plain = WorkerFrame(Data(try #require(WorkerQuick.reply(id: 1, info: info))))
        #expect(try WorkerQuick.runEnd(of: plain, started: info, shard: 0) == nil)
        let result = String(decoding: try #require(WorkerQuick.reply(id: 1, info: info)), as: UTF8.self).dropFirst(#"{"id":1,"result":"#.count).dropLast()
        let whole = #""exitCode":0,"exitReason":"exited","finishedAt":1.5,"removed":true"#
        let malformed = [#"{"removed":true}"#, #"{"exitCode":"0","exitReason":"x","finishedAt":1,"removed":true}"#,
                         "{" + whole + #","stdout":3}"#, "{" + whole + #","extra":1}"#, "{" + whole + #","vmExits":-1}"#, "[]"]
        for ended in malformed {
            let frame = WorkerFrame(Data(("{\"id\":1,\"result\":" + result + ",\"ended\":" + ended + "}").utf8))
            #expect(frame.tree != nil, "\(ended)")
            #expect(throws: EngineError.self, "\(ended)") { _ = try WorkerQuick.runEnd(of: frame, started: info, shard: 0) }
        }
        let good = WorkerFrame(Data(("{\"id\":1,\"result\":" + result + ",\"ended\":{" + whole + "}}").utf8))
        #expect(try WorkerQuick.runEnd(of: good, started: info, shard: 0)?.exit.info.finishedAt == 1.5)
    }

    @Test func aRemoveAndItsAnswerWrittenByHandAreWhatJSONDecoderReads() throws {
        for request in [WorkerRemove(id: "3e8b\"0e", force: true), WorkerRemove(id: "", force: false)] {
            let bytes = WorkerQuick.request(id: 3, op: "remove") { WorkerQuick.remove(request, into: &$0) }
            let frame = WorkerFrame(Data(bytes))
            #expect(frame.header?.op == "remove")
            let quick = try #require(WorkerQuick.remove(frame.member("body")))
            let decoded = try JSONDecoder().decode(WorkerRequest<WorkerRemove>.self, from: Data(bytes)).body
            #expect(quick.id == request.id && quick.force == request.force && decoded.id == request.id && decoded.force == request.force)
        }
        #expect(WorkerQuick.remove(WorkerFrame(Data(#"{"id":1,"op":"remove","body":{"id":"x"}}"#.utf8)).member("body")) == nil)
        let done = WorkerFrame(Data(WorkerQuick.done(id: 3)))
        let doneResult = try WorkerQuick.result(of: done, shard: 0, op: "remove")
        #expect(done.header?.id == 3 && doneResult == .object([]))
        let doneDecoded = try JSONDecoder().decode(WorkerReply<WorkerNothing>.self, from: done.data)
        #expect(doneDecoded.error?.message == nil)
    }

    @Test func aRefusalComesBackAsTheEngineErrorTheWorkerThrew() throws {
        let refusal = WorkerReply<ContainerInfo>(id: 5, result: nil, error: WorkerFault(EngineError(.conflict, "container name x is taken", field: "name")))
        let frame = WorkerFrame(try JSONEncoder().encode(refusal))
        #expect(frame.header?.id == 5)
        do {
            _ = try WorkerQuick.result(of: frame, shard: 2, op: "create")
            Issue.record("a refusal was read as a result")
        } catch let error as EngineError {
            #expect(error.kind == .conflict && error.message == "container name x is taken" && error.field == "name")
        }
        let empty = WorkerFrame(Data(#"{"id":5,"result":null}"#.utf8))
        #expect(throws: EngineError.self) { _ = try WorkerQuick.result(of: empty, shard: 2, op: "create") }
        // Not a message: no header.
        #expect(WorkerFrame(Data(#"{"op":"create"}"#.utf8)).header == nil)
        #expect(WorkerFrame(Data("[1]".utf8)).header == nil)
    }

    /// Frames written together come out one by one; a held answer goes once, after which the
    /// call's own answer is not sent again.
    @Test func framesWrittenTogetherAreReadOneByOneAndAHeldAnswerGoesOnce() throws {
        var pair: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        defer { close(pair[1]) }
        let peer = WorkerPeer(fd: pair[0])
        defer { peer.close() }
        var random = Seeded()
        let info = Self.info(&random)

        let answer = WorkerAnswer(id: 11, peer: peer)
        answer.hold(info)
        answer.send(info)
        answer.fail(EngineError(.failed, "late"))
        let held = try #require(answer.takeHeld())
        #expect(answer.takeHeld() == nil)
        let exit = try #require(WorkerQuick.exitEvent(WorkerExit(info: info)))
        peer.send(frames: [held, exit])

        let first = try #require(try WorkerWire.readFrame(pair[1]))
        let second = try #require(try WorkerWire.readFrame(pair[1]))
        #expect(WorkerFrame(first).header?.id == 11)
        #expect(WorkerFrame(second).header?.event == "exit")
        // Nothing else was sent: the stream ends when the worker's end closes.
        peer.close()
        #expect(try WorkerWire.readFrame(pair[1]) == nil)
    }
}
