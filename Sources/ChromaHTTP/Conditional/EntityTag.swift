/// Entity tags (RFC 9110 §8.8.3) as they appear in `ETag`, `If-Match`, `If-None-Match` and
/// `If-Range`: `"opaque"` or, weak, `W/"opaque"`.
struct EntityTag: Equatable {
    var opaque: Substring
    var weak: Bool

    /// One tag, the whole of `text` (surrounding spaces allowed); nil if it is not one.
    /// Works on the UTF-8 bytes: every delimiter is ASCII, and grapheme-aware `Substring`
    /// operations cost thousands of instructions on a path every file request takes.
    init?(_ text: Substring) {
        let bytes = text.utf8
        var start = bytes.startIndex, end = bytes.endIndex
        while start < end, EntityTag.isSpace(bytes[start]) { start = bytes.index(after: start) }
        while start < end {
            let before = bytes.index(before: end)
            guard EntityTag.isSpace(bytes[before]) else { break }
            end = before
        }
        weak = bytes.distance(from: start, to: end) >= 2 && bytes[start] == UInt8(ascii: "W")
            && bytes[bytes.index(after: start)] == UInt8(ascii: "/")
        if weak { start = bytes.index(start, offsetBy: 2) }
        guard bytes.distance(from: start, to: end) >= 2, bytes[start] == EntityTag.quote else { return nil }
        let last = bytes.index(before: end), inner = bytes.index(after: start)
        guard bytes[last] == EntityTag.quote, !bytes[inner..<last].contains(EntityTag.quote) else { return nil }
        opaque = text[inner..<last]
    }

    private static let quote = UInt8(ascii: "\"")
    private static func isSpace(_ byte: UInt8) -> Bool { byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }

    /// Strong comparison: both strong and the same (If-Match, If-Range).
    func strongMatch(_ other: EntityTag) -> Bool { !weak && !other.weak && sameOpaque(other) }

    /// Weak comparison: the same opaque part, weak or not (If-None-Match).
    func weakMatch(_ other: EntityTag) -> Bool { sameOpaque(other) }

    /// Octet by octet, as the RFC compares tags (not by Unicode equivalence).
    private func sameOpaque(_ other: EntityTag) -> Bool { opaque.utf8.elementsEqual(other.opaque.utf8) }

    /// A field value: `*`, or a list of tags. Tags may hold commas inside their quotes, so
    /// the list is split at quotes, not commas. nil when the value is malformed.
    enum List {
        case any
        case tags([EntityTag])
    }

    static func list(_ value: String) -> List? {
        let text = Substring(value)
        let bytes = text.utf8
        let end = bytes.endIndex
        var i = bytes.startIndex
        while i < end, isSpace(bytes[i]) { i = bytes.index(after: i) }
        if i < end, bytes[i] == UInt8(ascii: "*") {
            var j = bytes.index(after: i)
            while j < end, isSpace(bytes[j]) { j = bytes.index(after: j) }
            if j == end { return .any }
        }
        var tags: [EntityTag] = []
        i = bytes.startIndex
        while true {
            while i < end, isSpace(bytes[i]) || bytes[i] == UInt8(ascii: ",") { i = bytes.index(after: i) }
            if i == end { break }
            var opening = i
            if bytes[i] == UInt8(ascii: "W"), bytes.index(after: i) < end, bytes[bytes.index(after: i)] == UInt8(ascii: "/") {
                opening = bytes.index(i, offsetBy: 2)
            }
            guard opening < end, bytes[opening] == quote,
                  let close = bytes[bytes.index(after: opening)...].firstIndex(of: quote) else { return nil }
            let after = bytes.index(after: close)
            guard let tag = EntityTag(text[i..<after]) else { return nil }
            tags.append(tag)
            i = after
            var separator = i
            while separator < end, isSpace(bytes[separator]) { separator = bytes.index(after: separator) }
            guard separator == end || bytes[separator] == UInt8(ascii: ",") else { return nil }
        }
        return tags.isEmpty ? nil : .tags(tags)
    }
}
