@_spi(Engine) import Chroma
import Glibc
import SystemPackage

/// A directory's entries as an HTML page (`StaticFiles.directoryListing`).
enum DirectoryListing {
    struct Entry: Sendable, Equatable {
        var name: String
        var isDirectory: Bool
        var size: Int
    }

    /// The entries of `path`, sorted by name, without `.` and `..`. Blocking: a pool job.
    static func read(_ path: String) throws(FileError) -> [Entry] {
        guard let directory = opendir(path) else {
            throw FileError(operation: "opendir", path: FilePath(path), code: .system(Errno(rawValue: errno)))
        }
        defer { closedir(directory) }
        let fd = dirfd(directory)
        var entries: [Entry] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            var info = stat()
            // Follows links, as the file route does; an entry that vanished or cannot be
            // read is left out.
            guard fstatat(fd, name, &info, 0) == 0 else { continue }
            entries.append(Entry(name: name, isDirectory: info.st_mode & S_IFMT == S_IFDIR, size: Int(info.st_size)))
        }
        return entries.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
    }

    /// The page for request path `path` (percent-encoded, ending in `/`): one link per
    /// entry, directories with a trailing `/`, names escaped for HTML and for URLs.
    static func html(path: String, entries: [Entry]) -> [UInt8] {
        let title = escapeHTML(String(decoding: percentDecoded(path), as: UTF8.self))
        var page = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of \(title)</title></head>\n"
        page += "<body><h1>Index of \(title)</h1>\n<ul>\n"
        if path != "/" { page += "<li><a href=\"../\">../</a></li>\n" }
        for entry in entries {
            let suffix = entry.isDirectory ? "/" : ""
            let size = entry.isDirectory ? "" : " \(entry.size)"
            page += "<li><a href=\"\(percentEncoded(entry.name))\(suffix)\">\(escapeHTML(entry.name))\(suffix)</a>\(size)</li>\n"
        }
        page += "</ul></body></html>\n"
        return Array(page.utf8)
    }

    static func escapeHTML(_ text: String) -> String {
        var escaped = ""
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&#39;"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    /// A name as one path segment: unreserved bytes as they are, everything else `%XX`.
    static func percentEncoded(_ name: String) -> String {
        var encoded = ""
        for byte in name.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                encoded.append(Character(UnicodeScalar(byte)))
            default:
                encoded += "%" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true)
            }
        }
        return encoded
    }

    private static func percentDecoded(_ path: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var iterator = path.utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%"), let high = iterator.next(), let low = iterator.next(),
               let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16) {
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return bytes
    }
}
