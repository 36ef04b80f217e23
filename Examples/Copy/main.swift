// chroma-copy: blocking file I/O as completion events. Reads SOURCE whole on the blocking
// pool, writes it to DESTINATION atomically (temp file, fsync, rename, directory fsync),
// then checks the copy with a stat and a checksum computed on the pool, each completion
// arriving on the session's color. Errors print as typed `FileError`s.
//
//   swift run chroma-copy /etc/hostname /tmp/hostname.copy
import ArgumentParser
import Chroma
import Glibc
import Synchronization
import SystemPackage

/// The command line and the copy it runs. `run()` runs on the main thread and returns once
/// the last completion stopped the runtime. A missing SOURCE is not checked up front: it
/// comes back from the pool as a `FileError`, which is what this example shows.
struct ChromaCopy: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chroma-copy",
        abstract: "Copies a file through Chroma's blocking pool, each completion on one color."
    )

    @Argument(help: "The file to copy.")
    var source: String

    @Argument(help: "Where the copy goes (written to a temporary file, then renamed into place).")
    var destination: String

    func run() throws {
        let source = FilePath(self.source), destination = FilePath(self.destination)
        let exitStatus = ExitStatus()

        let runtime = try Runtime()
        try runtime.start()
        let session = runtime.makeColor()   // every completion below runs on this color, one at a time

        @Sendable func finish(_ message: String, status: Int32 = 0) {
            print(message)
            if status != 0 { exitStatus.value.store(status, ordering: .relaxed) }
            runtime.stop()
        }

        try runtime.execute(on: session) {
            // Files calls made inside a callback complete on the caller's color by default.
            try! runtime.files.read(source) { result in
                switch result {
                case .failure(let error) where error.errno == .noSuchFileOrDirectory:
                    finish("no such file: \(source)", status: 1)
                case .failure(let error):
                    finish("\(error)", status: 1)
                case .success(let bytes):
                    try! runtime.files.write(bytes, to: destination, atomic: true) { written in
                        if case .failure(let error) = written { return finish("\(error)", status: 1) }
                        try! runtime.files.stat(destination) { info in
                            guard case .success(let info) = info else { return finish("stat failed", status: 1) }
                            // Any blocking or CPU-heavy call goes to the pool the same way.
                            try! runtime.blocking {
                                bytes.reduce(UInt32(0)) { ($0 &* 31) &+ UInt32($1) }
                            } completion: { sum in
                                let checksum = (try? sum.get()).map { String($0, radix: 16) } ?? "?"
                                finish("copied \(info.size) bytes to \(destination) on \(Color.current!), checksum \(checksum)")
                            }
                        }
                    }
                }
            }
        }
        try runtime.run()
        let status = exitStatus.value.load(ordering: .relaxed)
        if status != 0 { throw ExitCode(status) }
    }
}

/// The process's exit status, set from any callback and read after `run()` returned.
final class ExitStatus: Sendable {
    let value = Atomic<Int32>(0)
}

ChromaCopy.main()
