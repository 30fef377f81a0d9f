// This file owns the `baio` command's root: its subcommands and version.
import ArgumentParser

@main
struct BAIO: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "baio",
        abstract: "Asynchronous buffered file reads in userspace (mincore/RWF_NOWAIT + readahead + libaio).",
        discussion: """
            Examples:
              baio cat big.iso | sha256sum
              baio dd if=big.iso of=/dev/null bs=1M status=progress
              baio residency --evict big.iso
              baio demo
              baio bench /data/f --block-size 4K --queue-depth 32 --evict
              baio help cat
            """,
        version: "0.1.0",
        subcommands: [Cat.self, DD.self, ResidencyCommand.self, Demo.self, Bench.self]
    )
}
