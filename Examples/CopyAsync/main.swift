// chroma-copy-async: Examples/Copy written as one straight async function instead of a
// chain of callbacks. Same runtime, same pool, same color: the session's work still runs
// on one color, one piece at a time; each `await` is the only place it can yield (Adya
// et al.'s cooperative task management, with the stack managed by the compiler).
//
//   swift run chroma-copy-async /etc/hostname /tmp/hostname.copy
import Chroma
import Glibc
import SystemPackage

let arguments = CommandLine.arguments
guard arguments.count == 3 else {
    print("usage: chroma-copy-async SOURCE DESTINATION")
    exit(2)
}
let source = FilePath(arguments[1]), destination = FilePath(arguments[2])

let runtime = try Runtime()
try runtime.start()
let session = runtime.makeColor()

/// The whole job, top to bottom. Runs on `session`'s loop: `Color.current` is `session`
/// after every await.
@Sendable func copy() async throws -> String {
    let bytes = try await runtime.files.read(source)
    try await runtime.files.write(bytes, to: destination, atomic: true)
    let info = try await runtime.files.stat(destination)
    let checksum = try await runtime.blocking { bytes.reduce(UInt32(0)) { ($0 &* 31) &+ UInt32($1) } }
    return "copied \(info.size) bytes to \(destination) on \(Color.current!), checksum \(String(checksum, radix: 16))"
}

// From callback code into async code and back: `spawn` runs the function on the color
// and hands its result to a completion on the same color.
let status = ExitStatus(0)
runtime.spawn(on: session, copy) { result in
    switch result {
    case .success(let line):
        print(line)
    case .failure(let error as FileError) where error.errno == .noSuchFileOrDirectory:
        print("no such file: \(error.path.map(String.init(describing:)) ?? "?")")
        status.store(1)
    case .failure(let error):
        print(error)
        status.store(1)
    }
    runtime.stop()
}
try runtime.run()
exit(status.load())

/// An Int32-sized exit status shared with the completion (set once, read after `run()`).
final class ExitStatus: @unchecked Sendable {
    // Safe to share: written once by the completion before `stop()`, read after `run()`
    // returned, which joined the loop threads (a happens-before edge).
    private var value: Int32
    init(_ value: Int32) { self.value = value }
    func store(_ v: Int32) { value = v }
    func load() -> Int32 { value }
}
