@testable import API
@testable import Engine
import Foundation
import NIOCore
import Testing

/// The launch path's hand-written JSON (`QuickJSON`) against Foundation's coders: what the fast
/// path reads, JSONDecoder reads the same; what it cannot read exactly so, it leaves to it.
@Suite struct QuickJSONTests {
    static func quick(_ text: String) -> ContainerSpec? { ContainerSpec.quick(from: ByteBuffer(string: text)) }
    static func decoded(_ data: Data) -> ContainerSpec? { try? JSONDecoder().decode(ContainerSpec.self, from: data) }

    @Test(arguments: [
        #"{"image":"busybox","arguments":["echo","hi"]}"#,
        #" { "image" : "busybox" , "arguments" : [ ] , "labels" : { } } "#,
        #"{"image":"a\"b\\c\/d\b\f\n\r\t","name":"\u00e9\u4e2d\ud83d\ude00","hostname":"é中😀"}"#,
        #"{"image":"i","memoryMiB":0,"memoryReservationMiB":-5,"openStdin":true,"tty":false,"forkPoint":"stdin"}"#,
        #"{"image":"i","labels":{"a":"1","b":"\u0000"},"environment":["A=1","B="],"cmd":["x"],"entrypoint":[""],"pool":"dev","stdin":"line\n"}"#,
        #"{"image":"i","memoryMiB":9223372036854775807}"#,
    ])
    func bodiesItReadsAreReadAsJSONDecoderReadsThem(text: String) throws {
        let spec = try #require(Self.quick(text), "the fast path gave up on \(text)")
        #expect(spec == Self.decoded(Data(text.utf8)))
    }

    @Test(arguments: [
        #"{"image":null}"#, #"{"image":"i","name":null}"#, #"{"image":"i","colour":"red"}"#, #"{"image":"i","image":"j"}"#,
        #"{"image":"i","memoryMiB":1.0}"#, #"{"image":"i","memoryMiB":012}"#, #"{"image":"i","memoryMiB":-0}"#,
        #"{"image":"i","memoryMiB":1e3}"#, #"{"image":"i","memoryMiB":9223372036854775808}"#, #"{"image":"i","memoryMiB":"64"}"#,
        #"{"image":"\ud800"}"#, #"{"image":"\udc00x"}"#, "{\"image\":\"a\u{1}b\"}", #"{"image":"i"} x"#, #"{"image":"i"}}"#,
        #"{"image":"i","arguments":[["x"]]}"#, #"{"image":"i","arguments":[1]}"#, #"{"image":"i","forkPoint":"later"}"#,
        #"{"name":"n"}"#, #"["image"]"#, #""image""#, "", #"{"image":"i","tty":true1}"#, #"{"image":"i","tty":tru}"#,
        #"{"image":"i","labels":{"a":1}}"#, #"{"image":"i",}"#, #"{"image":"\x"}"#, #"{"image":"\u12"}"#, #"{"image":"i""#,
    ])
    func bodiesItCannotReadExactlyAreLeftToTheDecoder(text: String) {
        #expect(Self.quick(text) == nil, "the fast path read \(text)")
    }

    @Test func bytesThatAreNotUTF8AreLeftToTheDecoder() {
        var buffer = ByteBuffer(string: #"{"image":""#)
        buffer.writeBytes([0xC3, 0x28])
        buffer.writeString(#""}"#)
        #expect(ContainerSpec.quick(from: buffer) == nil)
    }

    /// Random specs as JSONEncoder writes them are read back whole; random damage to those bytes
    /// is either left to the decoder or read as the decoder reads it.
    @Test func randomSpecsAndDamagedBodiesAgreeWithJSONDecoder() throws {
        var generator = SystemRandomNumberGenerator()
        let alphabet: [String] = ["a", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\u{0}", "\u{1F}", "é", "中", "😀", "\u{2028}", "{", "}", "[", ",", ":"]
        func text() -> String { String((0..<Int.random(in: 0...8, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }.joined()) }
        func words() -> [String]? { Bool.random(using: &generator) ? nil : (0..<Int.random(in: 0...3, using: &generator)).map { _ in text() } }
        var readBack = 0, damagedRead = 0
        for _ in 0..<2000 {
            let spec = ContainerSpec(
                image: text(), name: Bool.random() ? text() : nil, arguments: words(), entrypoint: words(), cmd: words(), environment: words(),
                hostname: Bool.random() ? text() : nil, memoryMiB: Bool.random() ? Int.random(in: Int.min...Int.max) : nil,
                forkPoint: Bool.random() ? ForkPointName.allCases.randomElement() : nil, labels: Bool.random() ? Dictionary([(text(), text()), (text(), text())], uniquingKeysWith: { first, _ in first }) : nil,
                openStdin: Bool.random() ? Bool.random() : nil, stdin: Bool.random() ? text() : nil, pool: Bool.random() ? text() : nil,
                memoryReservationMiB: Bool.random() ? Int.random(in: -100...100) : nil, tty: Bool.random() ? Bool.random() : nil)
            let encoded = try JSONEncoder().encode(spec)
            let quick = ContainerSpec.quick(from: ByteBuffer(bytes: encoded))
            #expect(quick == spec, "\(String(decoding: encoded, as: UTF8.self))")
            if quick == spec { readBack += 1 }
            var damaged = [UInt8](encoded)
            for _ in 0..<Int.random(in: 1...3, using: &generator) {
                let at = Int.random(in: 0..<damaged.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: damaged[at] = UInt8.random(in: 0...255, using: &generator)
                case 1: damaged.remove(at: at)
                default: damaged.insert(Array(#"",:{}[]\-0e.tn"#.utf8).randomElement(using: &generator)!, at: at)
                }
                if damaged.isEmpty { break }
            }
            if let read = ContainerSpec.quick(from: ByteBuffer(bytes: damaged)) {
                damagedRead += 1
                #expect(read == Self.decoded(Data(damaged)), "\(String(decoding: damaged, as: UTF8.self))")
            }
        }
        #expect(readBack == 2000 && damagedRead > 0)
    }

    @Test func runResultsWrittenByHandDecodeToThemselves() throws {
        let samples = ["", "hi\n", "quote \" backslash \\ slash / tab \t nul \u{0} esc \u{1B} del \u{7F}", "é中😀\u{2028}", String(repeating: "x", count: 70_000)]
        for stdout in samples {
            for figures in [(nil, nil, nil), (49.883, 1_796_524_384.7698123, 1_796_524_384.9), (0.00001, 1e16, -0.0)] as [(Double?, Double?, Double?)] {
                let result = RunResult(id: "33e047fc04ec116e6ea42ac0c72cb5d5", exitCode: -137, reason: "killed by \"signal\" 9", stdout: stdout,
                                       stderr: stdout.uppercased(), forkMicroseconds: figures.0, startedAt: figures.1, finishedAt: figures.2)
                let body = try #require(result.quickJSON())
                let bytes = Data(body.readableBytesView)
                #expect(try JSONDecoder().decode(RunResult.self, from: bytes) == result)
                // And read back by hand, from the hand-written form and from JSONEncoder's.
                #expect(RunResult.quick(from: bytes) == result)
                #expect(RunResult.quick(from: try JSONEncoder().encode(result)) == result)
                // The same keys, in the same (sorted) order, as the API's encoder writes.
                let object = try #require(try JSONSerialization.jsonObject(with: bytes) as? [String: Any])
                #expect(object.keys.sorted() == (try JSONSerialization.jsonObject(with: try JSONEncoder().encode(result)) as? [String: Any])?.keys.sorted())
            }
        }
        let infinite = RunResult(id: "x", exitCode: 0, reason: "", stdout: "", stderr: "", forkMicroseconds: .infinity, startedAt: nil, finishedAt: nil)
        #expect(infinite.quickJSON() == nil)
        // What the hand reader does not take whole is left to JSONDecoder: a member missing,
        // one it does not know, or one of another type.
        for text in [#"{"exitCode":0,"id":"x","reason":"","stderr":""}"#, #"{"exitCode":0,"id":"x","reason":"","stderr":"","stdout":"","extra":1}"#,
                     #"{"exitCode":"0","id":"x","reason":"","stderr":"","stdout":""}"#, #"{"exitCode":0,"id":"x","reason":"","stderr":"","stdout":"","startedAt":"1"}"#,
                     #"[1]"#, #"{"exitCode":0,"id":"x","reason":"","stderr":"","stdout":""#] {
            #expect(RunResult.quick(from: Data(text.utf8)) == nil, "\(text)")
        }
    }
}

/// The VCH's side of the launch path: a spec written by hand, a container read by hand.
@Suite struct QuickJSONContainerTests {
    @Test func specsWrittenByHandDecodeToThemselves() throws {
        let specs = [
            ContainerSpec(image: "busybox"),
            ContainerSpec(image: "b\"x\\", name: "n", arguments: ["a", "é\n"], entrypoint: [], cmd: ["sh"], environment: ["A=1"], hostname: "h",
                          memoryMiB: 64, forkPoint: .stdin, labels: ["z": "1", "a": "\u{0}"], openStdin: true, stdin: "in\n", pool: "dev",
                          memoryReservationMiB: 64, tty: false),
        ]
        for spec in specs {
            let data = spec.quickJSON()
            #expect(try JSONDecoder().decode(ContainerSpec.self, from: data) == spec, "\(String(decoding: data, as: UTF8.self))")
            #expect(ContainerSpec.quick(from: ByteBuffer(bytes: data)) == spec)
        }
    }

    @Test func containersAsTheAgentAnswersAreReadAsJSONDecoderReadsThem() throws {
        let base = ContainerInfo(id: "3e8b0e25872f0fe902fc3183459a6965", name: "dev.x", image: "busybox", state: .created, exitCode: nil, exitReason: nil,
                                 arguments: ["echo", "hi"], environment: ["PATH=/bin"], hostname: "x", memoryMiB: 64, forkPoint: .main,
                                 labels: ["vch": "dev"], parent: "busybox.main.64m", pool: "dev", placementID: 7, createdAt: 1_796_525_374.2859015,
                                 startedAt: nil, finishedAt: nil, forkMicroseconds: 158.277, reusedVM: false, argv0: "/bin/busybox", entrypoint: nil,
                                 cmd: ["echo", "hi"], tty: nil)
        var ended = base
        (ended.state, ended.exitCode, ended.exitReason, ended.startedAt, ended.finishedAt, ended.tty) = (.exited, 137, "killed by signal 9", 1.5, 2.25, true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        for info in [base, ended] {
            let data = try encoder.encode(info)
            #expect(ContainerInfo.quick(from: data) == info, "\(String(decoding: data, as: UTF8.self))")
        }
        // With the memory figures, or a field this reader does not know, or a null where a value must be: JSONDecoder's turn.
        for text in [#"{"memory":{"privateBytes":1}}"#, #"{"future":1}"#] {
            var object = try #require(try JSONSerialization.jsonObject(with: try encoder.encode(base)) as? [String: Any])
            for (key, value) in try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) { object[key] = value }
            #expect(ContainerInfo.quick(from: try JSONSerialization.data(withJSONObject: object)) == nil, "\(text)")
        }
        let nullName = String(decoding: try encoder.encode(base), as: UTF8.self).replacingOccurrences(of: #""name":"dev.x""#, with: #""name":null"#)
        #expect(ContainerInfo.quick(from: Data(nullName.utf8)) == nil)
    }

    @Test func exitsWrittenAndReadByHandAgreeWithFoundationsCoders() throws {
        var plain = ExitInfo(exitCode: 0, reason: "exited with 0")
        var full = ExitInfo(exitCode: 137, reason: "killed by \"signal\" 9")
        (full.stdout, full.stderr, full.removed) = (Data([0x68, 0x69, 0x0A, 0xFF, 0x00]), Data(), true)
        plain.removed = false
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        for exit in [plain, full, ExitInfo(exitCode: -1, reason: "")] {
            let hand = Data(exit.quickJSON().readableBytesView)
            #expect(try JSONDecoder().decode(ExitInfo.self, from: hand) == exit)
            #expect(hand == (try encoder.encode(exit)), "the same bytes as the API's encoder: \(String(decoding: hand, as: UTF8.self))")
            #expect(ExitInfo.quick(from: try encoder.encode(exit)) == exit)
        }
        for text in [#"{"exitCode":0,"reason":"x","stdout":"not base64!"}"#, #"{"exitCode":0,"reason":null}"#, #"{"exitCode":0}"#,
                     #"{"exitCode":0.5,"reason":"x"}"#, #"{"exitCode":0,"reason":"x","later":1}"#] {
            #expect(ExitInfo.quick(from: Data(text.utf8)) == nil, "\(text)")
        }
    }
}
