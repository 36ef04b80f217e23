@testable import ChromaKV
import FuzzSupport

/// `RESPParser`, fed the payload whole and then in the input's chunks, as a pipelining
/// client's bytes arrive. Properties:
/// - the split never matters: the same requests come out in the same order, and the same
///   protocol error (or none) ends them;
/// - no request is empty;
/// - a request written back as a multibulk parses to itself.
/// The parameter byte sets the limits low (bulk, inline and argument counts) so that their
/// errors are reached too.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRESP(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = FuzzInput(data, size)
    var limits = RESPLimits()
    limits.maxBulkLength = Int(input.parameter & 0x3F) * 4
    limits.maxInlineLength = Int(input.parameter >> 2) + 4
    limits.maxArguments = Int(input.parameter & 0x0F) + 1
    let whole = parse([input.payload[...]], limits)
    let split = parse(input.chunks, limits)
    require(whole.requests == split.requests, "a split changed the requests: \(whole.requests.count) whole, \(split.requests.count) split")
    require(whole.error == split.error, "a split changed the error: \(String(describing: whole.error)) whole, \(String(describing: split.error)) split")
    for request in whole.requests {
        require(!request.isEmpty, "an empty request")
        let again = parse([ArraySlice(encode(request))], RESPLimits())
        require(again.requests == [request] && again.error == nil, "a request written back as a multibulk does not parse to itself")
    }
    return 0
}

/// Every request the chunks hold, and the error that stopped the parser, if one did.
private func parse(_ chunks: [ArraySlice<UInt8>], _ limits: RESPLimits) -> (requests: [[[UInt8]]], error: RESPProtocolError?) {
    var parser = RESPParser(limits: limits)
    var requests: [[[UInt8]]] = []
    do throws(RESPProtocolError) {
        for chunk in chunks {
            try parser.append(chunk)
            while let request = try parser.next() { requests.append(request) }
        }
    } catch {
        return (requests, error)
    }
    return (requests, nil)
}

private func encode(_ request: [[UInt8]]) -> [UInt8] {
    var bytes = Array("*\(request.count)\r\n".utf8)
    for argument in request {
        bytes += Array("$\(argument.count)\r\n".utf8)
        bytes += argument
        bytes += [13, 10]
    }
    return bytes
}
