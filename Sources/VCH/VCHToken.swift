import Foundation

/// The bearer token of a VCH's TCP listener: the first line of a file, made with 32 random
/// bytes (hex) and mode 0600 when absent.
public enum VCHToken {
    public static func loadOrCreate(path: String) throws -> String {
        if !FileManager.default.fileExists(atPath: path) {
            var generator = SystemRandomNumberGenerator()
            let token = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw DockerError(status: .internalServerError, message: "cannot create \(path): \(String(cString: strerror(errno)))") }
            let bytes = Array((token + "\n").utf8)
            let written = write(fd, bytes, bytes.count)
            close(fd)
            guard written == bytes.count else { throw DockerError(status: .internalServerError, message: "cannot write \(path)") }
        }
        let text = try String(contentsOfFile: path, encoding: .utf8)
        guard let line = text.split(separator: "\n").first?.trimmingCharacters(in: .whitespaces), line.count >= 16 else {
            throw DockerError(status: .badRequest, message: "\(path) holds no token (a first line of 16 or more characters)")
        }
        return line
    }
}
