/// A RESP2 reply, as chroma-kv answers: the five types redis-cli and redis-benchmark read.
public enum RESPReply: Equatable, Sendable {
    /// `+OK`: a status line (no CR or LF inside).
    case simple(String)
    /// `-ERR …`: an error line; the text includes its prefix (`ERR`, `WRONGTYPE`).
    case error(String)
    /// `:42`.
    case integer(Int)
    /// `$3\r\nfoo`, or `$-1` for nil.
    case bulk([UInt8]?)
    /// `*2 …`, or `*-1` for nil.
    case array([RESPReply]?)

    public static let ok = RESPReply.simple("OK")
    public static let null = RESPReply.bulk(nil)

    /// The reply's bytes appended to `out`.
    public func encode(into out: inout [UInt8]) {
        switch self {
        case .simple(let text):
            out.append(UInt8(ascii: "+"))
            out.append(contentsOf: text.utf8)
        case .error(let text):
            out.append(UInt8(ascii: "-"))
            out.append(contentsOf: text.utf8)
        case .integer(let value):
            out.append(UInt8(ascii: ":"))
            RESPReply.appendDecimal(value, to: &out)
        case .bulk(nil), .array(nil):
            out.append(self == .bulk(nil) ? UInt8(ascii: "$") : UInt8(ascii: "*"))
            out.append(contentsOf: [UInt8(ascii: "-"), UInt8(ascii: "1")])
        case .bulk(let bytes?):
            out.append(UInt8(ascii: "$"))
            RESPReply.appendDecimal(bytes.count, to: &out)
            out.append(contentsOf: [13, 10])
            out.append(contentsOf: bytes)
        case .array(let items?):
            out.append(UInt8(ascii: "*"))
            RESPReply.appendDecimal(items.count, to: &out)
            out.append(contentsOf: [13, 10])
            for item in items { item.encode(into: &out) }
            return
        }
        out.append(contentsOf: [13, 10])
    }

    /// The reply's bytes.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        encode(into: &out)
        return out
    }

    static func appendDecimal(_ value: Int, to out: inout [UInt8]) {
        if value < 0 { out.append(UInt8(ascii: "-")) }
        var magnitude = value.magnitude
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        withUnsafeMutableBytes(of: &digits) { raw in
            repeat {
                raw[count] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
                count += 1
            } while magnitude > 0
            for i in stride(from: count - 1, through: 0, by: -1) { out.append(raw[i]) }
        }
    }
}
