import ArgumentParser
import Disk
import Foundation
import IOEngine

/// `vmfork disk`: VMDK disks of the datastore (image layers and container disks), served by
/// the engine's own VMDK code over io_uring.
struct DiskCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "disk",
        abstract: "Create, inspect, check, convert and commit VMDK disks.",
        subcommands: [Create.self, Child.self, Info.self, Write.self, Check.self, Convert.self, Commit.self, Bench.self, WriteLoop.self, Import.self]
    )

    static func makeEngine() throws -> IOEngine {
        do { return try IOEngine() } catch { throw ValidationError(error.description) }
    }

    /// "64M", "10G", "4096": a size in bytes with an optional K/M/G/T (binary) suffix.
    static func parseSize(_ text: String) throws -> UInt64 {
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        let upper = text.uppercased()
        if let last = upper.last, let unit = units[last], let number = UInt64(upper.dropLast()) {
            return number * unit
        }
        guard let bytes = UInt64(upper) else {
            throw ValidationError("size \"\(text)\" is not a number of bytes with an optional K, M, G or T suffix")
        }
        return bytes
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "create", abstract: "Create an empty disk.")
        @Argument(help: "The new disk's path (.vmdk).") var path: String
        @Option(help: "Capacity, e.g. 10G.") var size: String
        @Option(help: "monolithicSparse, monolithicFlat or twoGbMaxExtentSparse.") var subformat = "monolithicSparse"

        func run() async throws {
            guard let format = WritableSubformat(rawValue: subformat) else {
                throw ValidationError("--subformat \(subformat) is not one of \(WritableSubformat.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            try await VMDKImage.create(at: path, capacityBytes: try DiskCommand.parseSize(size), subformat: format, engine: try DiskCommand.makeEngine())
            print("created \(path)")
        }
    }

    struct Child: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "child", abstract: "Create a child (delta) disk of a parent disk.")
        @Argument(help: "The new child's path.") var path: String
        @Option(help: "The parent disk.") var parent: String

        func run() async throws {
            try await VMDKImage.createChild(at: path, parent: parent, engine: try DiskCommand.makeEngine())
            print("created \(path) on \(parent)")
        }
    }

    struct Info: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "info", abstract: "Show a disk and its chain of parents.")
        @Argument var path: String

        func run() async throws {
            let disk = try await VirtualDisk.open(path: path, engine: try DiskCommand.makeEngine())
            for (depth, layer) in try await disk.describe().enumerated() {
                print("\(depth == 0 ? "disk" : "parent \(depth)"): \(layer.path)")
                print("  createType \(layer.createType), capacity \(layer.capacityBytes) bytes, CID \(layer.cidText), parentCID \(layer.parentCIDText)")
                if let hint = layer.parentFileNameHint { print("  parent hint \(hint)") }
                if let grain = layer.grainBytes { print("  grain \(grain) bytes") }
                print("  allocated \(layer.allocatedBytes) bytes")
                for extent in layer.extents { print("  extent \(extent)") }
            }
        }
    }

    struct Write: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "write", abstract: "Write a file's bytes into a disk (the top of its chain) at an offset.")
        @Argument(help: "The disk.") var path: String
        @Argument(help: "The file whose bytes to write; padded with zeros to whole sectors.") var file: String
        @Option(help: "Byte offset in the disk, a multiple of 512.") var offset: UInt64 = 0

        func run() async throws {
            var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
            bytes += [UInt8](repeating: 0, count: (512 - bytes.count % 512) % 512)
            let disk = try await VirtualDisk.open(path: path, writable: true, engine: try DiskCommand.makeEngine())
            try await disk.write(bytes, at: offset)
            try await disk.flush()
            print("wrote \(bytes.count) bytes at \(offset) of \(path)")
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "check", abstract: "Check a disk's chain; exit 2 on corruption, 1 on repairable problems.")
        @Argument var path: String
        @Flag(help: "Fix what is safe to fix: leaked space, stale redundant grain tables.") var repair = false

        func run() async throws {
            let engine = try DiskCommand.makeEngine()
            let report = repair ? try await DiskCheck.repair(path: path, engine: engine) : await DiskCheck.check(path: path, engine: engine)
            for error in report.errors { print("error: \(error)") }
            for problem in report.repairable { print("repairable: \(problem)") }
            print("\(report.allocatedGrains) grains allocated, \(report.errors.count) errors, \(report.repairable.count) repairable, \(report.leakedBytes) bytes leaked")
            if !report.errors.isEmpty { throw ExitCode(2) }
            if !report.repairable.isEmpty { throw ExitCode(1) }
        }
    }

    struct Convert: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "convert", abstract: "Convert raw <-> VMDK, or between VMDK subformats.")
        @Argument(help: "The source disk (a VMDK, or raw with --from raw).") var source: String
        @Argument(help: "The new disk.") var destination: String
        @Option(help: "raw or vmdk.") var from = "vmdk"
        @Option(help: "raw, monolithicSparse, monolithicFlat or twoGbMaxExtentSparse.") var to = "monolithicSparse"

        func run() async throws {
            guard from == "raw" || from == "vmdk" else { throw ValidationError("--from \(from) is not raw or vmdk") }
            let format: DiskConversion.Format
            if to == "raw" {
                format = .raw
            } else if let subformat = WritableSubformat(rawValue: to) {
                format = .vmdk(subformat)
            } else {
                throw ValidationError("--to \(to) is not raw, \(WritableSubformat.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            try await DiskConversion.convert(source: source, sourceIsRaw: from == "raw", destination: destination, format: format, engine: try DiskCommand.makeEngine())
            print("converted \(source) to \(destination)")
        }
    }

    struct Commit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "commit", abstract: "Merge a child disk into its parent.")
        @Argument var path: String

        func run() async throws {
            let merged = try await DiskConversion.commit(childPath: path, engine: try DiskCommand.makeEngine())
            print("merged \(merged) bytes of \(path) into its parent")
        }
    }

    struct Bench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "bench",
            abstract: "Time a request pattern on a disk, as qemu-img bench does; prints IOPS and MB/s.")
        @Argument var path: String
        @Option(name: .customShort("c"), help: "Requests.") var count = 20000
        @Option(name: .customShort("d"), help: "Requests in flight.") var depth = 1
        @Option(name: .customShort("s"), help: "Request size in bytes.") var size = 4096
        @Option(name: .customShort("S"), help: "Offset step between requests, in bytes.") var step: UInt64 = 4096
        @Flag(name: .customShort("w"), help: "Write instead of read.") var write = false

        func run() async throws {
            let disk = try await VirtualDisk.open(path: path, writable: write, engine: try DiskCommand.makeEngine())
            let load = DiskLoad(requestBytes: size, step: step, depth: depth, count: count, write: write)
            let seconds = try await load.run(on: disk)
            let iops = Double(count) / seconds
            print(String(format: "%.0f IOPS %.1f MB/s %.3f s", iops, iops * Double(size) / 1e6, seconds))
        }
    }

    struct WriteLoop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "write-loop",
            abstract: "Write the crash test's schedule until killed, logging each acknowledged write.",
            shouldDisplay: false
        )
        @Argument var path: String
        @Option var seed: UInt64
        @Option(help: "Gets the number of each write once it is acknowledged.") var log: String

        func run() async throws {
            let disk = try await VirtualDisk.open(path: path, writable: true, engine: try DiskCommand.makeEngine())
            let schedule = WriteSchedule(seed: seed, capacityBytes: disk.capacityBytes)
            let logFD = Glibc.open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard logFD >= 0 else { throw ValidationError("cannot open --log \(log)") }
            let buffer = disk.engine.makeBuffer(count: WriteSchedule.maximumSectors * 512)
            var number = 0
            while true {
                let (first, sectors) = schedule.request(number)
                let data = UnsafeMutableRawBufferPointer(start: buffer.base, count: sectors * 512)
                WriteSchedule.fill(data, seed: seed, number: number, firstSector: first)
                try await disk.write(UnsafeRawBufferPointer(data), at: first * 512)
                try await disk.flush()
                let line = Array("\(number)\n".utf8)
                // unsafe: write reads at most the line's count bytes from its storage, during the closure.
                _ = line.withUnsafeBytes { Glibc.write(logFD, $0.baseAddress, $0.count) }
                number += 1
            }
        }
    }
}
