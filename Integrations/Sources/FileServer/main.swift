// An example static-file server: Hummingbird's FileMiddleware over a directory, with either BufferedAIO's
// provider or Hummingbird's LocalFileSystem (the only difference is the one line in `middleware`).
// Benchmarks/wrk-compare runs it with each in turn.
@_spi(Experiments) import BufferedAIO
import BufferedAIOHummingbird
import Glibc
import Hummingbird
import Logging

struct Options {
    var root = "public"
    var provider = "buffered"
    var host = "127.0.0.1"
    var port = 8080
    /// Engine policies for experiments (the defaults are ReadEngine.shared's).
    var probe = "automatic"
    var loneReadWait = true

    static let usage = """
        usage: FileServer [--root DIR] [--provider buffered|local] [--host ADDRESS] [--port N]
          --root DIR         the directory to serve (default: public)
          --provider NAME    buffered: BufferedAIO's BufferedFileProvider (default)
                             local: Hummingbird's LocalFileSystem (NIOFileSystem on NIOThreadPool.singleton)
          --host ADDRESS     the address to listen on (default: 127.0.0.1)
          --port N           the port (default: 8080)
          --probe automatic|nowait   the engine's residency probe (buffered only; default automatic)
          --lone-read-wait on|off    the engine's pollerWaitsForLoneRead (buffered only; default on)
        """

    static func parse(_ arguments: [String]) -> Options {
        var options = Options()
        var rest = arguments[...]
        while let flag = rest.popFirst() {
            guard let value = rest.popFirst() else { fail("\(flag) needs a value") }
            switch flag {
            case "--root": options.root = value
            case "--provider":
                guard value == "buffered" || value == "local" else { fail("unknown provider '\(value)'") }
                options.provider = value
            case "--host": options.host = value
            case "--port":
                guard let port = Int(value), (0...65535).contains(port) else { fail("bad port '\(value)'") }
                options.port = port
            case "--probe":
                guard value == "automatic" || value == "nowait" else { fail("unknown probe '\(value)'") }
                options.probe = value
            case "--lone-read-wait":
                guard value == "on" || value == "off" else { fail("--lone-read-wait takes on or off") }
                options.loneReadWait = value == "on"
            default: fail("unknown option '\(flag)'")
            }
        }
        return options
    }

    static func fail(_ message: String) -> Never {
        print("FileServer: \(message)\n\(usage)")
        exit(2)
    }
}

/// Serves `provider` until the process is told to stop: the same server whichever provider it is given.
func serve<Provider: FileProvider>(
    _ provider: Provider, _ options: Options, logger: Logger, engine: ReadEngine? = nil
) async throws where Provider.FileAttributes: FileMiddlewareFileAttributes {
    let router = Router()
    if let engine {
        // What the engine did so far (inline copies, readahead, poll passes, stalls): for the benchmark's notes.
        router.get("/_baio/statistics") { _, _ in "\(engine.statistics)\n" }
    }
    router.add(middleware: FileMiddleware(fileProvider: provider))
    let app = Application(
        router: router,
        configuration: .init(address: .hostname(options.host, port: options.port), serverName: "FileServer"),
        onServerRunning: { _ in
            print("FileServer: serving \(options.root) with \(options.provider) on \(options.host):\(options.port)")
            fflush(nil)  // all streams: the benchmark waits for this line through a pipe
        },
        logger: logger
    )
    try await app.runService()
}

let options = Options.parse(Array(CommandLine.arguments.dropFirst()))
var logger = Logger(label: "FileServer")
logger.logLevel = .notice
// The one line a migration changes:
if options.provider == "local" {
    try await serve(
        LocalFileSystem(rootFolder: options.root, threadPool: .singleton, logger: logger), options, logger: logger)
} else {
    var configuration = EngineConfiguration()
    configuration.residencyProbe = options.probe == "nowait" ? .nowait : .automatic
    configuration.pollerWaitsForLoneRead = options.loneReadWait
    let engine = try ReadEngine(configuration: configuration)
    try await serve(
        BufferedFileProvider(rootFolder: options.root, engine: engine, logger: logger), options, logger: logger,
        engine: engine)
}
