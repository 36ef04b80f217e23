@testable import ChromaHTTP
import FuzzSupport

/// `HTTPHeadScanner`, fed the payload in the input's chunks, request after request as a
/// pipelining connection does. Properties, for every split:
/// - each head ends where a plain byte-by-byte reading of evhttp's rule says it ends (skip
///   empty lines before the request line, then the first "\n\n" or "\n\r\n");
/// - an unfinished head has counted every byte it was given, and nothing more;
/// - `isTooLarge` is exactly "more bytes than the limit" (the parameter byte, 1...256).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTPHead(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = FuzzInput(data, size)
    let limit = Int(input.parameter) + 1
    var scanner = HTTPHeadScanner(limit: limit)
    var headStart = 0  // where the current request's bytes begin in the payload
    var offset = 0     // payload bytes fed so far
    for chunk in input.chunks {
        var rest = chunk
        while !rest.isEmpty {
            rest.withUnsafeBytes { scanner.scan($0) }
            guard scanner.isComplete else {
                offset += rest.count
                break
            }
            let expected = headLength(input.payload[headStart...])
            require(expected == scanner.length, "head at \(headStart) ends after \(String(describing: expected)) bytes, scanner says \(scanner.length)")
            require(scanner.isTooLarge == (scanner.length > limit), "isTooLarge for \(scanner.length) bytes, limit \(limit)")
            // The scanner stopped at the head's end; what follows is the next request.
            let used = headStart + scanner.length - offset
            require(used >= 1 && used <= rest.count, "the head's end lies in the last chunk")
            offset += used
            rest = rest.dropFirst(used)
            headStart = offset
            scanner.startRequest()
        }
    }
    if !scanner.isComplete {
        require(headLength(input.payload[headStart...]) == nil, "a complete head at \(headStart) went unseen")
        require(scanner.length == input.payload.count - headStart, "an unfinished head counted \(scanner.length) of \(input.payload.count - headStart) bytes")
        require(scanner.isTooLarge == (scanner.length > limit), "isTooLarge for \(scanner.length) bytes, limit \(limit)")
    }
    return 0
}

/// The length of the head at the start of `bytes`, up to and including its blank line, or
/// nil when it has not ended: the rule read one byte at a time, with no state carried.
private func headLength(_ bytes: ArraySlice<UInt8>) -> Int? {
    let lf: UInt8 = 0x0A, cr: UInt8 = 0x0D
    var i = bytes.startIndex
    while i < bytes.endIndex && (bytes[i] == lf || bytes[i] == cr) { i += 1 }
    guard i < bytes.endIndex else { return nil }
    var j = i + 1
    while j < bytes.endIndex {
        if bytes[j] == lf {
            if j + 1 < bytes.endIndex && bytes[j + 1] == lf { return j + 2 - bytes.startIndex }
            if j + 2 < bytes.endIndex && bytes[j + 1] == cr && bytes[j + 2] == lf { return j + 3 - bytes.startIndex }
        }
        j += 1
    }
    return nil
}
