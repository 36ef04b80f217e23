@testable import ChromaHTTP
import FuzzSupport

/// `StaticPath.resolve`, the request path below a file route's prefix, as the server gets
/// it (percent-encoded). Properties:
/// - a resolved path never leaves the root: it is relative, and none of its segments is
///   empty, `.` or `..`, so joining it to any root and normalizing stays below the root;
/// - it holds no NUL byte;
/// - it agrees with a plain reading of the rule: a bad escape or a NUL is malformed, else a
///   `..` segment after decoding is forbidden, else the decoded segments without `.` and
///   empty ones (`index.html` added for a directory) are the file.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzStaticPath(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let encoded = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let resolution = StaticPath.resolve(encoded)
    let expected = reference(encoded)
    require(resolution == expected, "\(encoded.debugDescription) resolves to \(resolution), expected \(expected)")
    if case .file(let path) = resolution {
        let bytes = Array(path.utf8)
        require(!bytes.isEmpty && bytes.first != UInt8(ascii: "/"), "\(path.debugDescription) is not relative")
        require(!bytes.contains(0), "\(path.debugDescription) holds a NUL")
        for segment in bytes.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false) {
            require(!segment.isEmpty && !segment.elementsEqual(".".utf8) && !segment.elementsEqual("..".utf8),
                    "\(path.debugDescription) has an empty, . or .. segment")
        }
        require(staysBelowRoot(bytes), "\(path.debugDescription) leaves the root")
    }
    return 0
}

/// The rule, step by step on bytes: decode, then judge, then normalize.
private func reference(_ encoded: String) -> StaticPath.Resolution {
    var decoded: [UInt8] = []
    let input = Array(encoded.utf8)
    var i = 0
    while i < input.count {
        if input[i] == UInt8(ascii: "%") {
            guard i + 2 < input.count, let high = hex(input[i + 1]), let low = hex(input[i + 2]) else { return .malformed }
            decoded.append(high * 16 + low)
            i += 3
        } else {
            decoded.append(input[i])
            i += 1
        }
    }
    if decoded.contains(0) { return .malformed }
    let segments = decoded.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
    if segments.contains(where: { $0.elementsEqual("..".utf8) }) { return .forbidden }
    var kept = segments.filter { !$0.isEmpty && !$0.elementsEqual(".".utf8) }.map { Array($0) }
    if kept.isEmpty || decoded.last == UInt8(ascii: "/") { kept.append(Array("index.html".utf8)) }
    return .file(String(decoding: Array(kept.joined(separator: [UInt8(ascii: "/")])), as: UTF8.self))
}

/// Normalizes "/srv/root/" + `path` lexically (as the kernel walks it, ignoring links) and
/// checks the result is still below "/srv/root".
private func staysBelowRoot(_ path: [UInt8]) -> Bool {
    var stack: [ArraySlice<UInt8>] = [ArraySlice("srv".utf8), ArraySlice("root".utf8)]
    for segment in path.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
        if segment.elementsEqual(".".utf8) { continue }
        if segment.elementsEqual("..".utf8) {
            if !stack.isEmpty { stack.removeLast() }
            continue
        }
        stack.append(segment)
    }
    return stack.count > 2 && stack[0].elementsEqual("srv".utf8) && stack[1].elementsEqual("root".utf8)
}

private func hex(_ byte: UInt8) -> UInt8? {
    switch byte {
    case 0x30...0x39: return byte - 0x30
    case 0x41...0x46: return byte - 0x41 + 10
    case 0x61...0x66: return byte - 0x61 + 10
    default: return nil
    }
}
