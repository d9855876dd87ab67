import Foundation

/// Guests linked statically against glibc (`gcc -static`), for tests of what a program's C
/// library sets up at start-up: each C program is built here into a rootfs of its own at /prog.
public enum GlibcGuest {
    /// The static C library gcc links with `-static`.
    public static let staticLibrary = "/usr/lib/x86_64-linux-gnu/libc.a"

    /// True when gcc and glibc's static library are installed (the tests that need them skip
    /// otherwise).
    public static let isAvailable: Bool = HostileGuest.isAvailable && FileManager.default.fileExists(atPath: staticLibrary)

    /// Builds `source` with `gcc -static` (or `-static-pie`, given in `flags`) and `flags` into a fresh rootfs at /prog and returns
    /// the rootfs.
    public static func rootfs(_ source: String, name: String = "glibc", flags: [String] = ["-O1"]) throws -> URL {
        let root = try HostFacts.makeTemporaryFolder(name)
        let sourceURL = root.appendingPathComponent("\(name).c")
        try source.write(to: sourceURL, atomically: true, encoding: .utf8)
        let output = root.appendingPathComponent("prog").path
        // `-static-pie` in `flags` replaces `-static` (the two pick different start files).
        let linking = flags.contains("-static-pie") ? [] : ["-static"]
        let result = try HostFacts.run("/usr/bin/gcc", linking + flags + ["-o", output, sourceURL.path])
        guard result.status == 0 else { throw HostileGuest.BuildError.compilerFailed(result.stderr) }
        try FileManager.default.removeItem(at: sourceURL)
        return root
    }
}
