import ArgumentParser
import Disk
import Foundation

extension DiskCommand {
    /// `vmfork disk import --from DIR DISK`: a host folder as an ext4 layer disk (a new disk,
    /// or with --parent a child of a layer disk holding only what the folder changes).
    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import",
            abstract: "Write a host folder as an ext4 file system on a new disk (with --parent: a new layer on top of a layer disk).")
        @Argument(help: "The new disk's path (.vmdk).") var path: String
        @Option(help: "The folder to copy (files, folders, symlinks, hard links, devices, modes, owners, times, xattrs).") var from: String
        @Option(help: "A layer disk to put this layer on (its ext4 must have been written by vmfork).") var parent: String?
        @Option(help: "Capacity of a new base disk, e.g. 8G (a child has its parent's).") var size = "8G"

        func run() async throws {
            let engine = try DiskCommand.makeEngine()
            let builder: Ext4Builder
            if let parent {
                try await VMDKImage.createChild(at: path, parent: parent, engine: engine)
                builder = try await Ext4Builder.open(on: try await VirtualDisk.open(path: path, writable: true, engine: engine))
            } else {
                try await VMDKImage.create(at: path, capacityBytes: try DiskCommand.parseSize(size), engine: engine)
                builder = try Ext4Builder.create(on: try await VirtualDisk.open(path: path, writable: true, engine: engine))
            }
            do {
                builder.beginLayer()
                try await builder.addTree(folder: from)
                try await builder.finish()
            } catch {
                unlink(path)
                throw error
            }
            print("imported \(from) into \(path)\(parent.map { " on \($0)" } ?? "")")
        }
    }
}
