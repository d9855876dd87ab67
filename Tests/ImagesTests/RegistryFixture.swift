import Foundation
import Images
import TestSupport

/// A real registry (Debian's docker-registry) on a free loopback port, in a temporary folder,
/// seeded with 127.0.0.1:PORT/busybox:latest by scripts/local-registry.sh; optionally with
/// htpasswd basic auth, or bearer tokens from scripts/token-server.py (then pushes are not
/// possible); with `python`, also with 127.0.0.1:PORT/python3:latest (this host's python3). Pushes more content with curl (the registry's own upload API).
final class RegistryFixture: @unchecked Sendable {
    // @unchecked: immutable after init; the registry process is only signalled from deinit.
    let folder: URL
    let port: Int
    let pid: Int32
    let tokenServer: Int32?
    let credentials: RegistryCredentials?

    static var isAvailable: Bool {
        ["/usr/bin/docker-registry", "/usr/bin/skopeo", "/usr/bin/umoci", "/usr/bin/curl"].allSatisfy { FileManager.default.isExecutableFile(atPath: $0) }
    }

    init(credentials: RegistryCredentials? = nil, bearer: Bool = false, python: Bool = false) throws {
        folder = try HostFacts.makeTemporaryFolder("registry")
        self.credentials = credentials
        let script = HostFacts.packageRoot.appendingPathComponent("scripts/local-registry.sh").path
        let auth = credentials.map { [bearer ? "--token" : "--htpasswd", "\($0.username):\($0.password)"] } ?? []
        let result = try HostFacts.run("/bin/bash", [script, folder.path] + auth + (python ? ["--python"] : []))
        let fields = result.stdout.split(whereSeparator: \.isWhitespace)
        guard result.status == 0, fields.count == (bearer ? 3 : 2), let port = Int(fields[0]), let pid = Int32(fields[1]) else {
            throw FixtureError(description: "local-registry.sh failed (\(result.status)): \(result.stdout) \(result.stderr)")
        }
        self.port = port
        self.pid = pid
        tokenServer = bearer ? Int32(fields[2]) : nil
    }

    deinit {
        kill(pid, SIGTERM)
        // SIGKILL: a child of the test process may inherit a mask that blocks SIGTERM.
        if let tokenServer { kill(tokenServer, SIGKILL) }
        try? FileManager.default.removeItem(at: folder)
    }

    struct FixtureError: Error, CustomStringConvertible { let description: String }

    var base: String { "http://127.0.0.1:\(port)/v2/busybox" }
    func reference(_ tag: String, repository: String = "busybox") -> String { "127.0.0.1:\(port)/\(repository):\(tag)" }

    private var authArguments: [String] { credentials.map { ["-u", "\($0.username):\($0.password)"] } ?? [] }

    /// GETs a document from the registry.
    func get(_ path: String, accept: String = "application/vnd.oci.image.manifest.v1+json") throws -> [UInt8] {
        let result = try HostFacts.run("/usr/bin/curl", ["-sf", "-H", "Accept: \(accept)"] + authArguments + [base + path])
        guard result.status == 0 else { throw FixtureError(description: "GET \(path): curl \(result.status)") }
        return Array(result.stdout.utf8)
    }

    /// Pushes a blob (monolithic upload) and returns its digest.
    @discardableResult
    func pushBlob(_ bytes: [UInt8]) throws -> Digest {
        let digest = Digest.of(bytes)
        let file = folder.appendingPathComponent("upload-\(digest.hex)")
        try Data(bytes).write(to: file)
        let start = try HostFacts.run("/usr/bin/curl", ["-s", "-D", "-", "-o", "/dev/null", "-X", "POST"] + authArguments + [base + "/blobs/uploads/"])
        guard let location = start.stdout.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("location:") })?
            .dropFirst("location:".count).trimmingCharacters(in: .whitespaces) else {
            throw FixtureError(description: "no upload location: \(start.stdout)")
        }
        let put = try HostFacts.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-H", "Content-Type: application/octet-stream",
                                                      "--data-binary", "@" + file.path] + authArguments + [location + "&digest=\(digest)"])
        guard put.stdout == "201" else { throw FixtureError(description: "blob upload answered \(put.stdout)") }
        return digest
    }

    /// Pushes a manifest or index under `tag`.
    func pushManifest(_ json: String, tag: String, mediaType: String = "application/vnd.oci.image.manifest.v1+json") throws {
        let file = folder.appendingPathComponent("manifest-\(tag).json")
        try json.write(to: file, atomically: true, encoding: .utf8)
        let put = try HostFacts.run("/usr/bin/curl", ["-s", "-w", "%{http_code}", "-X", "PUT", "-H", "Content-Type: \(mediaType)",
                                                      "--data-binary", "@" + file.path] + authArguments + [base + "/manifests/" + tag])
        guard put.stdout.hasSuffix("201") else { throw FixtureError(description: "manifest upload answered \(put.stdout)") }
    }

    /// Where the registry keeps a blob's bytes (its filesystem driver's layout).
    func storedBlob(_ digest: Digest) -> URL {
        folder.appendingPathComponent("storage/docker/registry/v2/blobs/sha256/\(digest.hex.prefix(2))/\(digest.hex)/data")
    }

    /// How many times the registry served GET for a blob (from its access log).
    func blobGets(_ digest: Digest) -> Int {
        let log = (try? String(contentsOf: folder.appendingPathComponent("registry.log"), encoding: .utf8)) ?? ""
        return log.split(separator: "\n").filter { $0.contains("\"GET /v2/busybox/blobs/\(digest)") }.count
    }

    /// The seeded busybox image: its manifest, its config and its layer's descriptor as JSON.
    func seededImage() throws -> (manifest: [String: Any], config: [String: Any], layer: [String: Any], diffID: String) {
        let manifest = try JSONSerialization.jsonObject(with: Data(try get("/manifests/latest"))) as! [String: Any]
        let configDigest = (manifest["config"] as! [String: Any])["digest"] as! String
        let config = try JSONSerialization.jsonObject(with: Data(try get("/blobs/" + configDigest, accept: "*/*"))) as! [String: Any]
        let layer = (manifest["layers"] as! [[String: Any]])[0]
        let diffID = ((config["rootfs"] as! [String: Any])["diff_ids"] as! [String])[0]
        return (manifest, config, layer, diffID)
    }

    /// Pushes an image of the seeded busybox layer plus `upper` (an uncompressed tar layer), with
    /// the seeded config's settings; returns the manifest's JSON text.
    /// With `upperBlob` and `upperMediaType`, the upper layer is sent as that blob (a
    /// compressed form of `upper`, whose digest stays the diff_id).
    @discardableResult
    func pushLayered(upper: [UInt8], tag: String, configOverride: String? = nil, upperSizeDelta: Int = 0,
                     upperBlob: [UInt8]? = nil, upperMediaType: String = "application/vnd.oci.image.layer.v1.tar") throws -> String {
        let seeded = try seededImage()
        let blob = upperBlob ?? upper
        let upperDigest = try pushBlob(blob)
        var config = seeded.config
        config["rootfs"] = ["type": "layers", "diff_ids": [seeded.diffID, Digest.of(upper).description]]
        let configBytes = try configOverride.map { Array($0.utf8) } ?? Array(JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]))
        let configDigest = try pushBlob(configBytes)
        let lower = seeded.layer
        let manifest = """
            {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",\
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\(configDigest)","size":\(configBytes.count)},\
            "layers":[{"mediaType":"\(lower["mediaType"]!)","digest":"\(lower["digest"]!)","size":\(lower["size"]!)},\
            {"mediaType":"\(upperMediaType)","digest":"\(upperDigest)","size":\(blob.count + upperSizeDelta)}]}
            """
        try pushManifest(manifest, tag: tag)
        return manifest
    }
}
