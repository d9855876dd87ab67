import Foundation

/// A refused config change (`docker commit --change`): the line as given and what is wrong.
public struct ConfigChangeError: Error, CustomStringConvertible, Sendable, Equatable {
    public var change: String
    public var problem: String

    public var description: String { "change \"\(change.prefix(120))\": \(problem)" }
}

/// One Dockerfile instruction applied to a committed image's config, as `docker commit
/// --change` applies it: CMD, ENTRYPOINT (exec form `["program","arg"]`, or shell form run by
/// the config's Shell, default `/bin/sh -c`), ENV and LABEL (`NAME=value ...` or the legacy
/// `NAME value`), WORKDIR (relative to the current one), USER, EXPOSE (`PORT[-PORT][/PROTO]`)
/// and STOPSIGNAL. Quotes, backslash escapes and `$NAME`/`${NAME}` (`${NAME:-word}`,
/// `${NAME:+word}`) are processed in ENV, LABEL, WORKDIR, USER, EXPOSE and STOPSIGNAL against
/// the config's environment, as Docker does. Other instructions are refused by name.
public enum ConfigChange: Sendable, Equatable {
    /// The program part of CMD and ENTRYPOINT.
    public enum Command: Sendable, Equatable {
        case exec([String])
        case shell(String)
    }

    case cmd(Command)
    case entrypoint(Command)
    /// NAME and value words as written (quotes and `$` not processed yet).
    case env([Pair])
    case label([Pair])
    case workdir(String)
    case user(String)
    case expose([String])
    case stopSignal(String)

    public struct Pair: Sendable, Equatable {
        public var name: String
        public var value: String

        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    /// The instructions `--change` takes.
    public static let supported = ["CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "STOPSIGNAL", "USER", "WORKDIR"]
    /// Docker takes these in `--change` too; vmfork has nothing that would honour them.
    static let unsupported: [String: String] = [
        "VOLUME": "its containers have no volumes", "ONBUILD": "it builds no images from Dockerfiles",
        "HEALTHCHECK": "it runs no health checks",
    ]
    /// Dockerfile instructions that build rather than configure: Docker refuses them in `--change`.
    static let building: Set<String> = ["ADD", "ARG", "COPY", "FROM", "MAINTAINER", "RUN", "SHELL"]
    /// At most this many ports from EXPOSE ranges, in all.
    static let maximumPorts = 1024

    /// Parses `changes` (each one instruction; a string with newlines, or lines continued by a
    /// trailing backslash, is read as Docker reads a Dockerfile's lines; blank lines and
    /// `#` comments are skipped).
    public static func parse(_ changes: [String]) throws(ConfigChangeError) -> [ConfigChange] {
        var parsed: [ConfigChange] = []
        for change in changes {
            var pending = ""
            for line in change.split(separator: "\n", omittingEmptySubsequences: false) {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                if pending.isEmpty && (trimmed.isEmpty || trimmed.hasPrefix("#")) { continue }
                if trimmed.hasSuffix("\\") {
                    pending += String(trimmed.dropLast())
                    continue
                }
                parsed.append(try parseLine(pending + trimmed))
                pending = ""
            }
            if !pending.trimmingCharacters(in: .whitespaces).isEmpty { parsed.append(try parseLine(pending)) }
        }
        return parsed
    }

    static func parseLine(_ line: String) throws(ConfigChangeError) -> ConfigChange {
        let line = line.trimmingCharacters(in: .whitespaces)
        let word = String(line.prefix { !$0.isWhitespace })
        let rest = line.dropFirst(word.count).trimmingCharacters(in: .whitespaces)
        let name = word.uppercased()
        func refuse(_ problem: String) -> ConfigChangeError { ConfigChangeError(change: line, problem: problem) }
        switch name {
        case "CMD", "ENTRYPOINT":
            let command = try parseCommand(rest, name: name, line: line)
            return name == "CMD" ? .cmd(command) : .entrypoint(command)
        case "ENV", "LABEL":
            let pairs = try parsePairs(rest, name: name, line: line)
            return name == "ENV" ? .env(pairs) : .label(pairs)
        case "WORKDIR", "USER", "STOPSIGNAL":
            guard !rest.isEmpty else { throw refuse("\(name) needs exactly one argument") }
            if name == "STOPSIGNAL", rest.contains(where: \.isWhitespace) { throw refuse("STOPSIGNAL needs exactly one argument") }
            return name == "WORKDIR" ? .workdir(rest) : name == "USER" ? .user(rest) : .stopSignal(rest)
        case "EXPOSE":
            let ports = rest.split(whereSeparator: \.isWhitespace).map(String.init)
            guard !ports.isEmpty else { throw refuse("EXPOSE needs at least one port") }
            return .expose(ports)
        default:
            if let reason = unsupported[name] { throw refuse("\(name) is not supported by vmfork's commit: \(reason) (it takes \(supported.joined(separator: ", ")))") }
            if building.contains(name) { throw refuse("\(name) is not a valid change instruction (commit takes \(supported.joined(separator: ", ")))") }
            throw refuse("\(word.prefix(40)) is not a Dockerfile instruction (commit takes \(supported.joined(separator: ", ")))")
        }
    }

    /// `["program","arg"]` (JSON, strings only) or the shell form, the rest of the line.
    static func parseCommand(_ rest: String, name: String, line: String) throws(ConfigChangeError) -> Command {
        guard rest.hasPrefix("[") else {
            guard !rest.isEmpty else { throw ConfigChangeError(change: line, problem: "\(name) needs a command: \(name) [\"program\",\"arg\"] or \(name) program arg") }
            return .shell(rest)
        }
        guard let array = try? JSONSerialization.jsonObject(with: Data(rest.utf8)) as? [Any], let strings = array as? [String],
              strings.count == array.count else {
            throw ConfigChangeError(change: line, problem: "\(name) \(rest.prefix(80)) is not a JSON array of strings (exec form: \(name) [\"program\",\"arg\"]; shell form: \(name) program arg)")
        }
        return .exec(strings)
    }

    /// `NAME=value ...` (each word holding '=') or the legacy `NAME value` (the rest of the line).
    static func parsePairs(_ rest: String, name: String, line: String) throws(ConfigChangeError) -> [Pair] {
        let words = ShellWords.split(rest)
        guard let first = words.first else { throw ConfigChangeError(change: line, problem: "\(name) needs NAME=value (or NAME value)") }
        guard first.contains("=") else {
            let value = rest.dropFirst(first.count).trimmingCharacters(in: .whitespaces)
            guard !value.isEmpty else { throw ConfigChangeError(change: line, problem: "\(name) \(first.prefix(80)) has no value: \(name) NAME=value or \(name) NAME value") }
            return [Pair(name: first, value: value)]
        }
        return try words.map { word throws(ConfigChangeError) in
            guard let equals = word.firstIndex(of: "=") else {
                throw ConfigChangeError(change: line, problem: "\(name) \(word.prefix(80)) has no '=': with several pairs each is NAME=value")
            }
            guard equals != word.startIndex else { throw ConfigChangeError(change: line, problem: "\(name) names cannot be blank (\(word.prefix(80)))") }
            return Pair(name: String(word[..<equals]), value: String(word[word.index(after: equals)...]))
        }
    }

    /// Applies `changes` in order to an image config (the whole JSON document: its `config`
    /// object is what changes, made when missing).
    public static func apply(_ changes: [ConfigChange], to document: inout [String: Any]) throws(ConfigChangeError) {
        var config = document["config"] as? [String: Any] ?? [:]
        var cmdSet = false
        var ports = 0
        for change in changes {
            let environment = config["Env"] as? [String] ?? []
            let shell = (config["Shell"] as? [String]).flatMap { $0.isEmpty ? nil : $0 } ?? ["/bin/sh", "-c"]
            func expand(_ word: String) throws(ConfigChangeError) -> String {
                do throws(ShellWords.Failure) { return try ShellWords.process(word, environment: environment) } catch {
                    throw ConfigChangeError(change: change.text, problem: error.problem)
                }
            }
            switch change {
            case .cmd(let command):
                config["Cmd"] = command.arguments(shell: shell)
                cmdSet = true
            case .entrypoint(let command):
                config["Entrypoint"] = command.arguments(shell: shell)
                // As in a Dockerfile: an ENTRYPOINT drops the CMD it did not come with.
                if !cmdSet { config.removeValue(forKey: "Cmd") }
            case .env(let pairs):
                var updated = environment
                for pair in pairs {
                    let name = try expand(pair.name), value = try expand(pair.value)
                    guard !name.isEmpty, !name.contains("=") else {
                        throw ConfigChangeError(change: change.text, problem: "ENV name \"\(name.prefix(80))\" must be non-empty and free of '='")
                    }
                    let entry = "\(name)=\(value)"
                    if let index = updated.firstIndex(where: { $0.hasPrefix(name + "=") }) { updated[index] = entry } else { updated.append(entry) }
                }
                config["Env"] = updated
            case .label(let pairs):
                var labels = config["Labels"] as? [String: String] ?? [:]
                for pair in pairs {
                    let name = try expand(pair.name)
                    guard !name.isEmpty else { throw ConfigChangeError(change: change.text, problem: "LABEL names cannot be blank") }
                    labels[name] = try expand(pair.value)
                }
                config["Labels"] = labels
            case .workdir(let raw):
                let path = try expand(raw)
                guard !path.isEmpty else { throw ConfigChangeError(change: change.text, problem: "WORKDIR \(raw.prefix(80)) is empty once expanded") }
                let current = (config["WorkingDir"] as? String).flatMap { $0.isEmpty ? nil : $0 } ?? "/"
                config["WorkingDir"] = cleanPath(path.hasPrefix("/") ? path : current + "/" + path)
            case .user(let raw):
                let user = try expand(raw)
                guard !user.isEmpty else { throw ConfigChangeError(change: change.text, problem: "USER \(raw.prefix(80)) is empty once expanded") }
                config["User"] = user
            case .expose(let words):
                var exposed = config["ExposedPorts"] as? [String: Any] ?? [:]
                for word in words {
                    let spec = try expand(word)
                    let keys: [String]
                    do throws(ShellWords.Failure) { keys = try portKeys(spec) } catch { throw ConfigChangeError(change: change.text, problem: error.problem) }
                    ports += keys.count
                    guard ports <= maximumPorts else {
                        throw ConfigChangeError(change: change.text, problem: "EXPOSE names over \(maximumPorts) ports in all")
                    }
                    for key in keys { exposed[key] = [String: Any]() }
                }
                config["ExposedPorts"] = exposed
            case .stopSignal(let raw):
                let signal = try expand(raw)
                guard validSignal(signal) else {
                    throw ConfigChangeError(change: change.text, problem: "STOPSIGNAL \(signal.prefix(40)) is not a signal (a name such as SIGTERM or TERM, or a number 1-64)")
                }
                config["StopSignal"] = signal
            }
        }
        document["config"] = config
    }

    /// The instruction as a line (for messages).
    var text: String {
        func command(_ command: Command) -> String {
            switch command {
            case .exec(let arguments): String(decoding: (try? JSONSerialization.data(withJSONObject: arguments, options: [.withoutEscapingSlashes])) ?? Data(), as: UTF8.self)
            case .shell(let line): line
            }
        }
        func pairs(_ pairs: [Pair]) -> String { pairs.map { "\($0.name)=\($0.value)" }.joined(separator: " ") }
        return switch self {
        case .cmd(let c): "CMD \(command(c))"
        case .entrypoint(let c): "ENTRYPOINT \(command(c))"
        case .env(let p): "ENV \(pairs(p))"
        case .label(let p): "LABEL \(pairs(p))"
        case .workdir(let path): "WORKDIR \(path)"
        case .user(let user): "USER \(user)"
        case .expose(let ports): "EXPOSE \(ports.joined(separator: " "))"
        case .stopSignal(let signal): "STOPSIGNAL \(signal)"
        }
    }

    /// "/a/./b/../c//" → "/a/c" (Go's path.Clean for absolute paths).
    static func cleanPath(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/") {
            if part == "." { continue }
            if part == ".." { _ = parts.popLast(); continue }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }

    /// "80", "80/udp", "8000-8002/tcp" → ["80/tcp"], …, one key per port.
    static func portKeys(_ spec: String) throws(ShellWords.Failure) -> [String] {
        let parts = spec.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let proto = parts.count == 2 ? parts[1].lowercased() : "tcp"
        guard ["tcp", "udp", "sctp"].contains(proto) else { throw .init(problem: "EXPOSE \(spec.prefix(40)): protocol \(proto.prefix(20)) is not tcp, udp or sctp") }
        let range = parts[0].split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard let low = UInt16(range[0]), low > 0, let high = range.count == 2 ? UInt16(range[1]) : low, high >= low else {
            throw .init(problem: "EXPOSE \(spec.prefix(40)) is not PORT[-PORT][/PROTOCOL] with ports 1-65535")
        }
        guard Int(high) - Int(low) < maximumPorts else { throw .init(problem: "EXPOSE \(spec.prefix(40)) names over \(maximumPorts) ports") }
        return (low...high).map { "\($0)/\(proto)" }
    }

    static let signalNames: Set<String> = [
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE", "POLL", "PROF", "PWR",
        "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH",
        "XCPU", "XFSZ", "RTMIN", "RTMAX",
    ]

    /// A signal as Docker names one: a number 1-64, or a name with or without SIG (any case),
    /// RTMIN+n and RTMAX-n (n 1-15) too.
    static func validSignal(_ signal: String) -> Bool {
        if let number = Int(signal) { return (1...64).contains(number) }
        var name = signal.uppercased()
        if name.hasPrefix("SIG") { name.removeFirst(3) }
        if signalNames.contains(name) { return true }
        for (prefix, separator) in [("RTMIN", "+"), ("RTMAX", "-")] where name.hasPrefix(prefix + separator) {
            if let offset = Int(name.dropFirst(prefix.count + 1)), (1...15).contains(offset) { return true }
        }
        return false
    }
}

extension ConfigChange.Command {
    func arguments(shell: [String]) -> [String] {
        switch self {
        case .exec(let arguments): arguments
        case .shell(let line): shell + [line]
        }
    }
}

/// Dockerfile words: split at whitespace outside quotes, then each one's quotes, escapes and
/// `$` references processed (Docker's shell-word rules, without command substitution).
enum ShellWords {
    struct Failure: Error { var problem: String }

    /// Splits at unquoted, unescaped whitespace; quotes and backslashes are kept.
    static func split(_ text: String) -> [String] {
        var words: [String] = []
        var word = ""
        var quote: Character?
        var escaped = false
        var inWord = false
        for character in text {
            if escaped {
                word.append(character)
                escaped = false
                continue
            }
            if character == "\\" && quote != "'" {
                word.append(character)
                escaped = true
                inWord = true
                continue
            }
            if let open = quote {
                if character == open { quote = nil }
                word.append(character)
                continue
            }
            if character.isWhitespace {
                if inWord { words.append(word) }
                word = ""
                inWord = false
                continue
            }
            if character == "\"" || character == "'" { quote = character }
            word.append(character)
            inWord = true
        }
        if inWord { words.append(word) }
        return words
    }

    /// One word with its quotes removed, backslash escapes taken and `$NAME`, `${NAME}`,
    /// `${NAME:-word}` and `${NAME:+word}` replaced from `environment` (unset: empty).
    static func process(_ word: String, environment: [String]) throws(Failure) -> String {
        var characters = Array(word)[...]
        return try process(&characters, environment: environment, until: nil)
    }

    private static func process(_ characters: inout ArraySlice<Character>, environment: [String], until stop: Character?) throws(Failure) -> String {
        var result = ""
        while let character = characters.popFirst() {
            if let stop, character == stop { return result }
            switch character {
            case "\\":
                result.append(characters.popFirst() ?? "\\")
            case "'":
                guard let end = characters.firstIndex(of: "'") else { throw Failure(problem: "a single quote is not closed") }
                result += String(characters[..<end])
                characters = characters[characters.index(after: end)...]
            case "\"":
                result += try doubleQuoted(&characters, environment: environment)
            case "$":
                result += try reference(&characters, environment: environment)
            default:
                result.append(character)
            }
        }
        if let stop { throw Failure(problem: "a '\(stop)' is missing") }
        return result
    }

    private static func doubleQuoted(_ characters: inout ArraySlice<Character>, environment: [String]) throws(Failure) -> String {
        var result = ""
        while let character = characters.popFirst() {
            switch character {
            case "\"": return result
            case "\\":
                if let next = characters.first, ["\"", "\\", "$"].contains(next) {
                    result.append(next)
                    characters.removeFirst()
                } else {
                    result.append("\\")
                }
            case "$": result += try reference(&characters, environment: environment)
            default: result.append(character)
            }
        }
        throw Failure(problem: "a double quote is not closed")
    }

    /// What follows a `$`: a name, `{name}`, `{name:-word}`, `{name:+word}`; else a plain '$'.
    private static func reference(_ characters: inout ArraySlice<Character>, environment: [String]) throws(Failure) -> String {
        func isNameStart(_ c: Character) -> Bool { c == "_" || (c.isASCII && c.isLetter) }
        func isName(_ c: Character) -> Bool { isNameStart(c) || (c.isASCII && c.isNumber) }
        func value(_ name: String) -> String? {
            environment.last(where: { $0.hasPrefix(name + "=") }).map { String($0.dropFirst(name.count + 1)) }
        }
        guard let first = characters.first else { return "$" }
        if isNameStart(first) {
            let name = String(characters.prefix(while: isName))
            characters.removeFirst(name.count)
            return value(name) ?? ""
        }
        guard first == "{" else { return "$" }
        characters.removeFirst()
        let name = String(characters.prefix(while: isName))
        guard !name.isEmpty else { throw Failure(problem: "${…} holds no variable name") }
        characters.removeFirst(name.count)
        switch characters.popFirst() {
        case "}":
            return value(name) ?? ""
        case ":":
            let modifier = characters.popFirst()
            let word = try process(&characters, environment: environment, until: "}")
            let current = value(name) ?? ""
            switch modifier {
            case "-": return current.isEmpty ? word : current
            case "+": return current.isEmpty ? "" : word
            default: throw Failure(problem: "${\(name):\(modifier.map(String.init) ?? "")…}: only :- and :+ are supported")
            }
        default:
            throw Failure(problem: "${\(name)…} is not closed by '}'")
        }
    }
}
