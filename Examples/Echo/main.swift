// chroma-echo: the line echo server (CS:APP's echo server, event-driven and on every core).
// Each connection gets its own color, so its lines are echoed in order while other
// connections run in parallel on other loops. A client idle for 60 s (or one that sends
// half a line and stalls) is closed.
//
//   chroma-echo --port P [--loops N]
import Chroma
import Glibc

var port: UInt16?
var loops = Runtime.onlineCPUCount
var arguments = CommandLine.arguments.dropFirst()
while let flag = arguments.popFirst() {
    switch flag {
    case "--port": port = arguments.popFirst().flatMap { UInt16($0) }
    case "--loops": loops = arguments.popFirst().flatMap { Int($0) } ?? -1
    default: port = nil; arguments.removeAll()
    }
}
guard let port, loops >= 1 else {
    print("usage: chroma-echo --port P [--loops N]")
    exit(2)
}

let runtime = try Runtime(loops: loops)
try runtime.start()
let listener = try runtime.listen(port: port) { connection in
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
