// chroma-copy: blocking file I/O as completion events. Reads SOURCE whole on the blocking
// pool, writes it to DESTINATION atomically (temp file, fsync, rename, directory fsync),
// then checks the copy with a stat and a checksum computed on the pool, each completion
// arriving on the session's color. Errors print as typed `FileError`s.
//
//   swift run chroma-copy /etc/hostname /tmp/hostname.copy
import Chroma
import Glibc
import Synchronization
import SystemPackage

let arguments = CommandLine.arguments
guard arguments.count == 3 else {
    print("usage: chroma-copy SOURCE DESTINATION")
    exit(2)
}
let source = FilePath(arguments[1]), destination = FilePath(arguments[2])

/// The process's exit status, set from callbacks.
let exitStatus = Atomic<Int32>(0)

let runtime = try Runtime()
try runtime.start()
let session = runtime.makeColor()   // every completion below runs on this color, one at a time

@Sendable func finish(_ message: String, status: Int32 = 0) {
    print(message)
    if status != 0 { exitStatus.store(status, ordering: .relaxed) }
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
exit(exitStatus.load(ordering: .relaxed))

