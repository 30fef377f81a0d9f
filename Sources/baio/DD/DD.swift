// This file owns the `baio dd` command: its help, and the run that validates every operand before anything
// is opened (DDOperands.swift) and then copies (DDCopy.swift).
import ArgumentParser

struct DD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dd",
        abstract: "Copy a file with dd's operands, reading regular files through the engine.",
        discussion: """
            A drop-in for GNU dd's copying: the same operands, the same output bytes and the same summary on
            standard error. A regular input file is read through an IOContext with a deep window of reads
            in flight ahead of the writer; standard input, pipes and devices are read with read(2).

            Operands:
              if=FILE       read FILE instead of standard input
              of=FILE       write FILE instead of standard output; it is created (0666 & ~umask) and
                            truncated at the seek point unless conv=notrunc
              bs=BYTES      read and write BYTES at a time (overrides ibs and obs); each input block is
                            written as it was read, a short one included
              ibs=BYTES     read BYTES at a time (default 512)
              obs=BYTES     write BYTES at a time (default 512); input is re-blocked into obs-sized writes
              count=N       copy only N input blocks (N bytes with iflag=count_bytes)
              skip=N        skip N input blocks first (bytes with iflag=skip_bytes); iseek=N is the same
              seek=N        skip N output blocks first (bytes with oflag=seek_bytes); oseek=N is the same
              iflag=FLAGS   comma-separated:
                              direct       O_DIRECT reads through libaio, around the page cache
                              nocache      read through the cache and drop what was read
                              fullblock    gather whole input blocks from short reads (pipes)
                              count_bytes  count= is in bytes
                              skip_bytes   skip= is in bytes
              oflag=FLAGS   comma-separated: direct (O_DIRECT writes), seek_bytes (seek= is in bytes),
                            dsync, sync (O_DSYNC, O_SYNC writes)
              conv=CONVS    comma-separated: notrunc (do not truncate the output), sparse (seek over
                            all-zero output blocks), fsync, fdatasync (sync the output at the end),
                            excl (fail if the output exists), nocreat (do not create it), sync (pad
                            every short input block to ibs with NULs), swab (swap every pair of bytes)
              status=LEVEL  none (print nothing on stderr), noxfer (no transfer line), progress (a transfer
                            line refreshed once a second on stderr during the copy)

            N and BYTES may have a suffix: c=1, w=2, b=512, kB=1000, K=KiB=1024, MB=1000*1000, M=MiB=1024*1024,
            and likewise G, T, P, E, Z, Y, R, Q; AxB multiplies (2x4K).

            Exit status: 0 on success, 1 if an operand is wrong or a file fails (nothing is opened or created
            for a wrong operand). SIGINT cancels the reads in flight, prints the summary so far and ends the
            process by SIGINT (status 130 in a shell), as GNU dd does.

            Examples:
              baio dd if=disk.img of=/dev/null bs=1M
              baio dd if=disk.img of=copy.img bs=4M conv=sparse,fsync status=progress
              baio dd if=data.bin bs=4K skip=10 count=5 | od -A d -t x1
              baio dd if=app.log of=part.log iflag=skip_bytes,count_bytes skip=1000 count=200
              baio dd if=disk.img of=/dev/null bs=1M iflag=direct
              producer | baio dd of=out.bin bs=64K iflag=fullblock
            """)

    @Argument(parsing: .allUnrecognized, help: "Operands in dd's KEY=VALUE form, listed below.")
    var operands: [String] = []

    func run() throws {
        let parsed: DDOperands
        do {
            parsed = try DDOperands(parsing: operands)
        } catch {
            error.report()
            throw ExitCode(1)
        }
        var copier = DDCopier(parsed)
        let status = copier.run()
        if status != 0 { throw ExitCode(status) }
    }
}
