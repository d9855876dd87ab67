import ArgumentParser
import Foundation
import Placement

/// Where the placement state lives; shared by the placement subcommands.
struct StateOptions: ParsableArguments {
    @Option(help: "The state folder (default: $VMFORK_STATE, else ./state).")
    var state: String?

    func openService() throws -> PlacementService {
        try PlacementService(folder: state.map { URL(fileURLWithPath: $0, isDirectory: true) } ?? PlacementService.defaultFolder)
    }
}

/// A memory amount on the command line, with its unit: 512KiB, 64MiB, 2GiB, 1TiB.
struct MemoryAmount: ExpressibleByArgument {
    let kib: Int

    init?(argument: String) {
        let units: [(String, Int)] = [("TiB", 1 << 30), ("GiB", 1 << 20), ("MiB", 1 << 10), ("KiB", 1)]
        guard let (suffix, scale) = units.first(where: { argument.hasSuffix($0.0) }),
              let value = Double(argument.dropLast(suffix.count)) else { return nil }
        kib = Int((value * Double(scale)).rounded())
    }

    static var defaultValueDescription: String { "e.g. 64GiB" }
}
