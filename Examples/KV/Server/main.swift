// chroma-kv: a Redis-protocol key-value server on colors. A key's shard is a color, and
// the shard's keys are touched only on it, so no lock guards them; each connection parses
// on its own color and its replies keep request order across shards. RESP2 as redis-cli
// and redis-benchmark speak it (see the README for the commands).
//
//   chroma-kv --port P [--loops N] [--shards N] [--dir DIR] [--appendfsync always|everysec|no] [--inline on|off]
//
// With --dir, every change goes to an append-only log in DIR through the blocking pool, and
// a start loads DIR back; without it, keys live in memory only. SIGINT or SIGTERM stops it
// (the log is synced first).
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

    @Option(parsing: .unconditional, help: ArgumentHelp("Data directory for the append-only log and snapshots (created if missing). Without it, keys live in memory only.", valueName: "path"))
    var dir: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("When the log reaches the disk: always (each write acknowledged once on disk), everysec, or no.", valueName: "mode"))
    var appendfsync: String = "everysec"

    @Option(parsing: .unconditional, help: ArgumentHelp("on: a command for a shard on the connection's own loop, with nothing queued for it, runs at once; off: every command is a job (for comparison).", valueName: "on|off"))
    var inline: String = "on"

    func validate() throws {
        guard inline == "on" || inline == "off" else { throw ValidationError("--inline must be on or off, not \(inline)") }
        guard AppendFsync(rawValue: appendfsync) != nil else { throw ValidationError("--appendfsync must be always, everysec or no, not \(appendfsync)") }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0...65535, not \(port)") }
        if let loops, loops < 1 { throw ValidationError("--loops must be at least 1, not \(loops)") }
        if let shards, shards < 1 { throw ValidationError("--shards must be at least 1, not \(shards)") }
    }

    func run() throws {
        let loops = self.loops ?? Runtime.onlineCPUCount
        let runtime = try Runtime(loops: loops)
        try runtime.start()
        let storage = dir.map { KVStorage(directory: $0, fsync: AppendFsync(rawValue: appendfsync)!) }
        let server: KVServer
        do {
            server = try KVServer(runtime: runtime, shardCount: shards, storage: storage, runsHere: inline == "on")
        } catch let error as KVStorageError {
            runtime.stop()
            _ = try? runtime.run()
            throw ValidationError(error.description)
        }
        let listener = try server.listen(port: UInt16(port))
        try runtime.onSignal(SIGINT) { runtime.stop() }
        try runtime.onSignal(SIGTERM) { runtime.stop() }
        let keeping = dir.map { "\(server.recovery.keys) keys loaded from \($0), appendfsync \(appendfsync)" } ?? "in memory only"
        print("chroma-kv listening on port \(listener.port) with \(loops) loop(s), \(server.shardCount) shards, \(keeping)")
        fflush(nil)  // the listening line must reach a pipe before any client connects
        try runtime.run()
        try server.close()
    }
}

ChromaKVServer.main()
