/// One fuzzer input read as a test case: a parameter byte, a split seed, then the payload.
///
/// The first byte picks a target-specific parameter (a length limit, say), the second seeds
/// the chunk boundaries, and the rest is the payload the target feeds in those chunks. So
/// libFuzzer mutates where the payload is cut as freely as the payload itself, and a saved
/// input replays exactly. Inputs under two bytes have an empty payload.
public struct FuzzInput {
    /// The parameter byte (0 when absent).
    public let parameter: UInt8
    /// The bytes to feed.
    public let payload: [UInt8]
    private let seed: UInt8

    /// Reads `size` bytes at `data`, as libFuzzer passes them.
    public init(_ data: UnsafePointer<UInt8>, _ size: Int) {
        let bytes = UnsafeBufferPointer(start: data, count: size)
        parameter = size > 0 ? bytes[0] : 0
        seed = size > 1 ? bytes[1] : 0
        payload = size > 2 ? Array(bytes[2...]) : []
    }

    /// The payload cut into chunks whose lengths come from the seed: seed 0 is one chunk,
    /// 1 is one byte per chunk, others a repeatable mix of short and long pieces. The
    /// chunks, joined, are the payload.
    public var chunks: [ArraySlice<UInt8>] {
        guard !payload.isEmpty else { return [] }
        if seed == 0 { return [payload[...]] }
        var state = UInt32(seed) &* 2_654_435_761 | 1
        var pieces: [ArraySlice<UInt8>] = []
        var start = 0
        while start < payload.count {
            var length = 1
            if seed != 1 {
                state ^= state << 13
                state ^= state >> 17
                state ^= state << 5
                length = Int(state % UInt32(seed % 31 + 2)) + 1
            }
            let end = min(payload.count, start + length)
            pieces.append(payload[start..<end])
            start = end
        }
        return pieces
    }
}

/// Stops the fuzzer with a finding: libFuzzer saves the input that broke `property`.
public func require(_ condition: @autoclosure () -> Bool, _ property: @autoclosure () -> String,
                    file: StaticString = #fileID, line: UInt = #line) {
    if !condition() { fatalError("property broken: \(property())", file: file, line: line) }
}
