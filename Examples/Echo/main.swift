// chroma-echo: the line echo server (CS:APP's echo server, event-driven and on every core).
// Each connection gets its own color, so its lines are echoed in order while other
// connections run in parallel on other loops. A client idle for 60 s (or one that sends
// half a line and stalls) is closed.
//
//   chroma-echo --port P [--loops N]
import ArgumentParser
import Chroma
import Glibc

/// The command line and the server it starts. `run()` runs on the main thread and returns
/// after SIGINT or SIGTERM stopped the runtime.
struct ChromaEcho: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chroma-echo",
        abstract: "A line echo server on every core: each connection on its own color.",
        discussion: "Prints one line once it is listening; SIGINT or SIGTERM stops it."
    )

    @Option(parsing: .unconditional, help: "TCP port to listen on, 0...65535 (0: the kernel picks a free one, printed when listening).")
    var port: Int

    @Option(parsing: .unconditional, help: ArgumentHelp("Event loops to run, at least 1. (default: one per online CPU)", valueName: "n"))
    var loops: Int?

    func validate() throws {
        guard (0...65535).contains(port) else {
            throw ValidationError("--port must be in 0...65535, not \(port)")
        }
        if let loops, loops < 1 {
            throw ValidationError("--loops must be at least 1, not \(loops)")
        }
    }

    func run() throws {
        let loops = self.loops ?? Runtime.onlineCPUCount
        let runtime = try Runtime(loops: loops)
        try runtime.start()
        let listener = try runtime.listen(port: UInt16(port)) { connection in
            connection.setTimeouts(read: .seconds(60))
            connection.onLines(maxLength: 64 << 10) { line in
                connection.write(line + [UInt8(ascii: "\n")])
            }
        }
        try runtime.onSignal(SIGINT) { runtime.stop() }
        try runtime.onSignal(SIGTERM) { runtime.stop() }
        print("chroma-echo listening on port \(listener.port) with \(loops) loop(s)")
        fflush(nil)  // the listening line must reach a pipe before any client connects
        try runtime.run()
    }
}

ChromaEcho.main()
