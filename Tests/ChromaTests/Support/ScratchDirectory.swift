import Foundation

/// A fresh directory under the system's temporary directory for one test, removed by
/// `remove()` (call it from `tearDown`).
struct ScratchDirectory {
    /// The directory's path, without a trailing slash.
    let path: String

    /// Creates `<tmp>/chroma-<name>-<pid>-<random>` and the subdirectories `creating`.
    init(_ name: String, creating subdirectories: [String] = []) throws {
        path = NSTemporaryDirectory() + "chroma-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        for sub in subdirectories {
            try FileManager.default.createDirectory(atPath: path + "/" + sub, withIntermediateDirectories: true)
        }
    }

    /// Writes `bytes` to the file `name` inside the directory.
    func write(_ bytes: [UInt8], to name: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path + "/" + name))
    }

    /// Removes the directory and everything in it.
    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}
