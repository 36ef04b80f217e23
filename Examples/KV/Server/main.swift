// chroma-kv: a Redis-protocol key-value server on colors. A key's shard is a color, and
// the shard's keys are touched only on it, so no lock guards them; each connection parses
// on its own color and its replies keep request order across shards. RESP2 as redis-cli
// and redis-benchmark speak it (see the README for the commands).
//
//   chroma-kv --port P [--loops N] [--shards N]
//
// Keys live in memory only: the durable log is not built yet. SIGINT or SIGTERM stops it.
import ArgumentParser
import Chroma
import ChromaKV
import Glibc

/// The command line and the server it starts. `run()` runs on the main thread and returns
/// after SIGINT or SIGTERM stopped the runtime.
struct ChromaKVServer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chroma-kv",
        abstract: "A Redis-protocol key-value server: shards on colors, every core.",
        discussion: "Prints one line once it is listening; SIGINT or SIGTERM stops it."
    )

    @Option(parsing: .unconditional, help: "TCP port to listen on, 0...65535 (0: the kernel picks a free one, printed when listening).")
    var port: Int

    @Option(parsing: .unconditional, help: ArgumentHelp("Event loops to run, at least 1. (default: one per online CPU)", valueName: "n"))
    var loops: Int?

    @Option(parsing: .unconditional, help: ArgumentHelp("Shards, each a color of its own, at least 1. (default: 16 per loop)", valueName: "n"))
    var shards: Int?

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0...65535, not \(port)") }
        if let loops, loops < 1 { throw ValidationError("--loops must be at least 1, not \(loops)") }
        if let shards, shards < 1 { throw ValidationError("--shards must be at least 1, not \(shards)") }
    }

    func run() throws {
        let loops = self.loops ?? Runtime.onlineCPUCount
        let runtime = try Runtime(loops: loops)
        try runtime.start()
        let server = try KVServer(runtime: runtime, shardCount: shards)
        let listener = try server.listen(port: UInt16(port))
        try runtime.onSignal(SIGINT) { runtime.stop() }
        try runtime.onSignal(SIGTERM) { runtime.stop() }
        print("chroma-kv listening on port \(listener.port) with \(loops) loop(s), \(server.shardCount) shards")
        fflush(nil)  // the listening line must reach a pipe before any client connects
        try runtime.run()
    }
}

ChromaKVServer.main()
