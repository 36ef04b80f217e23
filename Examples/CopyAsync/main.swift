// chroma-copy-async: Examples/Copy written as one straight async function instead of a
// chain of callbacks. Same runtime, same pool, same color: the session's work still runs
// on one color, one piece at a time; each `await` is the only place it can yield (Adya
// et al.'s cooperative task management, with the stack managed by the compiler).
//
//   swift run chroma-copy-async /etc/hostname /tmp/hostname.copy
import ArgumentParser
import Chroma
import Glibc
import Synchronization
import SystemPackage

/// The command line and the copy it runs. `run()` runs on the main thread and returns once
/// the completion stopped the runtime. A missing SOURCE is not checked up front: it comes
/// back as a thrown `FileError`, which is what this example shows.
struct ChromaCopyAsync: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chroma-copy-async",
        abstract: "chroma-copy as one async function: the same copy, the same pool, the same color."
    )

    @Argument(help: "The file to copy.")
    var source: String

    @Argument(help: "Where the copy goes (written to a temporary file, then renamed into place).")
    var destination: String

    func run() throws {
        let source = FilePath(self.source), destination = FilePath(self.destination)
        let runtime = try Runtime()
        try runtime.start()
        let session = runtime.makeColor()

        /// The whole job, top to bottom. Runs on `session`'s loop: `Color.current` is
        /// `session` after every await.
        @Sendable func copy() async throws -> String {
            let bytes = try await runtime.files.read(source)
            try await runtime.files.write(bytes, to: destination, atomic: true)
            let info = try await runtime.files.stat(destination)
            let checksum = try await runtime.blocking { bytes.reduce(UInt32(0)) { ($0 &* 31) &+ UInt32($1) } }
            return "copied \(info.size) bytes to \(destination) on \(Color.current!), checksum \(String(checksum, radix: 16))"
        }

        // From callback code into async code and back: `spawn` runs the function on the color
        // and hands its result to a completion on the same color.
        let exitStatus = ExitStatus()
        runtime.spawn(on: session, copy) { result in
            switch result {
            case .success(let line):
                print(line)
            case .failure(let error as FileError) where error.errno == .noSuchFileOrDirectory:
                print("no such file: \(error.path.map(String.init(describing:)) ?? "?")")
                exitStatus.value.store(1, ordering: .relaxed)
            case .failure(let error):
                print(error)
                exitStatus.value.store(1, ordering: .relaxed)
            }
            runtime.stop()
        }
        try runtime.run()
        let status = exitStatus.value.load(ordering: .relaxed)
        if status != 0 { throw ExitCode(status) }
    }
}

/// The process's exit status, set by the completion and read after `run()` returned.
final class ExitStatus: Sendable {
    let value = Atomic<Int32>(0)
}

ChromaCopyAsync.main()
