/// Entity tags (RFC 9110 §8.8.3) as they appear in `ETag`, `If-Match`, `If-None-Match` and
/// `If-Range`: `"opaque"` or, weak, `W/"opaque"`.
struct EntityTag: Equatable {
    var opaque: Substring
    var weak: Bool

    /// One tag, the whole of `text` (surrounding spaces allowed); nil if it is not one.
    init?(_ text: Substring) {
        var rest = text.drop { $0 == " " || $0 == "\t" }
        while let last = rest.last, last == " " || last == "\t" { rest = rest.dropLast() }
        weak = rest.hasPrefix("W/")
        if weak { rest = rest.dropFirst(2) }
        guard rest.count >= 2, rest.first == "\"", rest.last == "\"" else { return nil }
        opaque = rest.dropFirst().dropLast()
        guard !opaque.contains("\"") else { return nil }
    }

    /// Strong comparison: both strong and the same (If-Match, If-Range).
    func strongMatch(_ other: EntityTag) -> Bool { !weak && !other.weak && opaque == other.opaque }

    /// Weak comparison: the same opaque part, weak or not (If-None-Match).
    func weakMatch(_ other: EntityTag) -> Bool { opaque == other.opaque }

    /// A field value: `*`, or a list of tags. Tags may hold commas inside their quotes, so
    /// the list is split at quotes, not commas. nil when the value is malformed.
    enum List {
        case any
        case tags([EntityTag])
    }

    static func list(_ value: String) -> List? {
        let trimmed = value.drop { $0 == " " || $0 == "\t" }
        if trimmed.hasPrefix("*") && trimmed.dropFirst().allSatisfy({ $0 == " " || $0 == "\t" }) { return .any }
        var tags: [EntityTag] = []
        var rest = Substring(value)
        while true {
            rest = rest.drop { $0 == " " || $0 == "\t" || $0 == "," }
            if rest.isEmpty { break }
            let weak = rest.hasPrefix("W/")
            let quoted = weak ? rest.dropFirst(2) : rest
            guard quoted.first == "\"", let close = quoted.dropFirst().firstIndex(of: "\"") else { return nil }
            guard let tag = EntityTag(rest[rest.startIndex...close]) else { return nil }
            tags.append(tag)
            rest = rest[rest.index(after: close)...]
            let separator = rest.drop { $0 == " " || $0 == "\t" }
            guard separator.isEmpty || separator.first == "," else { return nil }
        }
        return tags.isEmpty ? nil : .tags(tags)
    }
}
