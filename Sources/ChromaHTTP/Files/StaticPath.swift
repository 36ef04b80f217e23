/// Request paths to file paths.
enum StaticPath {
    enum Resolution: Equatable {
        /// The path below the root, decoded, with `.` and empty segments removed.
        case file(String)
        /// A `..` segment.
        case forbidden
        /// A bad percent escape or a NUL byte.
        case malformed
    }

    static func resolve(_ encoded: String) -> Resolution {
        if isPlain(encoded) { return .file(encoded) }
        var decoded: [UInt8] = []
        decoded.reserveCapacity(encoded.utf8.count)
        var bytes = encoded.utf8.makeIterator()
        while let byte = bytes.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = bytes.next().flatMap(hexValue), let low = bytes.next().flatMap(hexValue) else { return .malformed }
                decoded.append(high << 4 | low)
            } else {
                decoded.append(byte)
            }
        }
        if decoded.contains(0) { return .malformed }
        var segments: [ArraySlice<UInt8>] = []
        for segment in decoded.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
            if segment.elementsEqual("..".utf8) { return .forbidden }
            if segment.elementsEqual(".".utf8) { continue }
            segments.append(segment)
        }
        if segments.isEmpty || decoded.last == UInt8(ascii: "/") { segments.append(ArraySlice("index.html".utf8)) }
        let joined = segments.joined(separator: [UInt8(ascii: "/")])
        return .file(String(decoding: Array(joined), as: UTF8.self))
    }

    /// Whether `encoded` is already its own resolution: nothing to decode, no NUL, no
    /// empty, `.` or `..` segment, not a directory. One pass and no copy, for the common
    /// request.
    private static func isPlain(_ encoded: String) -> Bool {
        var length = 0, dots = 0  // of the current segment
        var any = false
        for byte in encoded.utf8 {
            any = true
            switch byte {
            case UInt8(ascii: "%"), 0:
                return false
            case UInt8(ascii: "/"):
                if length == 0 || (length == dots && dots <= 2) { return false }
                length = 0
                dots = 0
            case UInt8(ascii: "."):
                length += 1
                dots += 1
            default:
                length += 1
            }
        }
        return any && length > 0 && !(length == dots && dots <= 2)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// A MIME type from the file name's extension.
    static func contentType(of path: String) -> String {
        guard let dot = path.lastIndex(of: "."), !path[dot...].contains("/") else { return "application/octet-stream" }
        switch path[path.index(after: dot)...].lowercased() {
        case "html", "htm": return "text/html; charset=utf-8"
        case "txt": return "text/plain; charset=utf-8"
        case "css": return "text/css; charset=utf-8"
        case "js", "mjs": return "text/javascript; charset=utf-8"
        case "json": return "application/json"
        case "svg": return "image/svg+xml"
        case "png": return "image/png"
        case "jpg", "jpeg": return "image/jpeg"
        case "gif": return "image/gif"
        case "webp": return "image/webp"
        case "ico": return "image/x-icon"
        case "wasm": return "application/wasm"
        case "pdf": return "application/pdf"
        default: return "application/octet-stream"
        }
    }
}
