import ArgumentParser
import Placement

/// `vmfork image`: images forks are made from, and what a fork of each really costs.
struct ImageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image",
        abstract: "Add images and record each image's observed growth per child.",
        subcommands: [Add.self, Growth.self]
    )

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add an image with its warm parent's size and its cost per fork.")
        @Argument(help: "The image's name.") var name: String
        @Option(help: "Memory of the warm parent, e.g. 48MiB.") var parentMemory: MemoryAmount
        @Option(help: "Private memory a child owns after running a while, e.g. 2MiB.") var growth: MemoryAmount
        @Option(help: "CPU MHz each child is charged.") var cpu: Int
        @OptionGroup var options: StateOptions

        func run() throws {
            try options.openService().addImage(ImageSpec(name: name, parentMemoryKiB: parentMemory.kib, growthPerChildKiB: growth.kib, cpuMHzPerChild: cpu))
            print("added image \(name)")
        }
    }

    struct Growth: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Record the growth per child the fork engine measured.")
        @Argument(help: "The image's name.") var name: String
        @Argument(help: "Private memory per child, e.g. 384KiB.") var growth: MemoryAmount
        @OptionGroup var options: StateOptions

        func run() throws {
            try options.openService().setGrowth(image: name, growthPerChildKiB: growth.kib)
            print("image \(name): forks are now charged \(Resources.formatKiB(growth.kib))")
        }
    }
}
