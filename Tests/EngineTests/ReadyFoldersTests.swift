@testable import Engine
import Foundation
import TestSupport
import Testing

/// A folder pool's ready list (`ReadyFolders`): the latest readied folders keep their log files
/// open and are the ones taken, however many are ready.
struct ReadyFoldersTests {
    @Test func theLatestReadiedKeepTheirFilesOpenAndAreTakenFirst() throws {
        let base = try HostFacts.makeTemporaryFolder("ready-folders")
        defer { try? FileManager.default.removeItem(at: base) }
        let capacity = ContainerFolderPool.openCapacity
        var ready = ReadyFolders()
        var letGo: [String] = []
        for index in 0..<(capacity + 6) {
            let name = "f\(index)"
            let path = base.appendingPathComponent(name).path
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
            let files = try ContainerLogFiles(folderPath: path, truncate: false)
            if let dropped = ready.push(name, files) { letGo.append(dropped === files ? "itself" : "other") }
        }
        // One folder without files (an earlier process's), readied last.
        #expect(ready.push("left", nil) == nil)
        #expect(ready.count == capacity + 7)
        // Beyond the capacity, the oldest open folders let their files go, never the one pushed.
        #expect(letGo == Array(repeating: "other", count: 6))
        // Taken: the latest readied with files first (newest to oldest), then those without.
        var taken: [(String, Bool)] = []
        while let folder = ready.popLast() { taken.append((folder.name, folder.files != nil)) }
        let withFiles = taken.prefix(capacity)
        #expect(withFiles.map(\.0) == (6..<(capacity + 6)).reversed().map { "f\($0)" })
        #expect(withFiles.allSatisfy { $0.1 })
        #expect(taken.dropFirst(capacity).map(\.0) == ["left", "f5", "f4", "f3", "f2", "f1", "f0"])
        #expect(taken.dropFirst(capacity).allSatisfy { !$0.1 })
        #expect(ready.count == 0)
    }
}
