/// The `Range` header of a GET (RFC 9110 §14.2), against a representation of known size.
enum ByteRanges: Equatable {
    /// Send the whole representation with 200: no header, another unit, a malformed one,
    /// or one this server chooses to ignore (see `parse`).
    case whole
    /// 416 Range Not Satisfiable: no range starts inside the representation.
    case unsatisfiable
    /// 206 Partial Content with these ranges (offset and length each), in the order sent.
    case ranges([Span])

    struct Span: Equatable {
        var offset: Int
        var length: Int
        var last: Int { offset + length - 1 }
    }

    /// Ranges asked for at most; a header with more is ignored (answered whole).
    static let maxRanges = 16

    /// Parses `header` ("bytes=0-99", "bytes=-500", "bytes=9500-", "bytes=0-0,-1") for a
    /// representation of `size` bytes. Ranges that reach past the end are cut at it; ones
    /// that start past it are left out. As the RFC allows, more than `maxRanges` ranges or
    /// ranges that overlap are answered with the whole representation (one answer, instead
    /// of a multipart one that can be many times the size).
    static func parse(_ header: String, size: Int) -> ByteRanges {
        let trimmed = header.drop { $0 == " " }
        guard trimmed.count > 6, trimmed.prefix(6).lowercased() == "bytes=" else { return .whole }
        var spans: [Span] = []
        var specs = 0
        for spec in trimmed.dropFirst(6).split(separator: ",", omittingEmptySubsequences: false) {
            let text = spec.trimmingSpaces
            if text.isEmpty { continue }  // an empty list element ("bytes=0-1,,2-3") is allowed
            specs += 1
            guard specs <= maxRanges, let dash = text.firstIndex(of: "-") else { return .whole }
            let firstText = text[..<dash], lastText = text[text.index(after: dash)...]
            if firstText.isEmpty {
                // A suffix: the last N bytes.
                guard let suffix = Int(digits: lastText) else { return .whole }
                if suffix > 0 && size > 0 { spans.append(Span(offset: max(0, size - suffix), length: min(suffix, size))) }
                continue
            }
            guard let first = Int(digits: firstText) else { return .whole }
            var last = size - 1
            if !lastText.isEmpty {
                guard let given = Int(digits: lastText), given >= first else { return .whole }
                last = min(given, size - 1)
            }
            if first < size { spans.append(Span(offset: first, length: last - first + 1)) }
        }
        guard specs > 0 else { return .whole }
        guard !spans.isEmpty else { return .unsatisfiable }
        let sorted = spans.sorted { $0.offset < $1.offset }
        for (earlier, later) in zip(sorted, sorted.dropFirst()) where later.offset <= earlier.last { return .whole }
        return .ranges(spans)
    }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var text = self.drop { $0 == " " || $0 == "\t" }
        while let last = text.last, last == " " || last == "\t" { text = text.dropLast() }
        return text
    }
}

extension Int {
    /// Decimal digits only (no sign, no spaces), within Int's range.
    fileprivate init?(digits: Substring) {
        guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
              let value = Int(digits) else { return nil }
        self = value
    }
}
