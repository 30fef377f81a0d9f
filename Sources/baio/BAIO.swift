// This file owns the `baio` command's root: its subcommands and version.
import ArgumentParser

@main
struct BAIO: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "baio",
        abstract: "Asynchronous buffered file reads in userspace (mincore/RWF_NOWAIT + readahead + libaio).",
        version: "0.1.0",
        subcommands: [Demo.self, Bench.self, DD.self]
    )
}
