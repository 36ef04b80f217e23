import Glibc

/// HTTP-dates (RFC 9110 §5.6.7) to and from seconds since 1970 UTC.
enum HTTPDateText {
    /// IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
    static func format(_ seconds: Int) -> String {
        utc(seconds, "%a, %d %b %Y %H:%M:%S GMT")
    }

    /// `seconds` since 1970 in UTC, written with strftime's `format` (at most 39 bytes).
    static func utc(_ seconds: Int, _ format: String) -> String {
        var time = seconds
        var parts = tm()
        gmtime_r(&time, &parts)
        var text = [CChar](repeating: 0, count: 40)
        // strftime's names come from the C locale, which Chroma never changes.
        let count = strftime(&text, text.count, format, &parts)
        return String(decoding: text[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]

    /// Any of the three forms a recipient must accept: IMF-fixdate, RFC 850
    /// ("Sunday, 06-Nov-94 08:49:37 GMT") and asctime ("Sun Nov  6 08:49:37 1994"); nil for
    /// anything else, which the conditional headers then ignore, as the RFC says.
    static func parse(_ text: String) -> Int? {
        if let seconds = parseFixdate(text) { return seconds }
        let tokens = text.split { $0 == " " || $0 == "," || $0 == "-" }.map(String.init)
        guard tokens.count >= 5 else { return nil }
        let day: Int?, month: Int?, year: Int?, clock: String
        if let asctimeMonth = months.firstIndex(of: tokens[1].lowercased()) {
            guard tokens.count == 5 else { return nil }
            (day, month, year, clock) = (Int(tokens[2]), asctimeMonth, Int(tokens[4]), tokens[3])
        } else {
            guard tokens.count == 6, tokens[5] == "GMT" else { return nil }
            day = Int(tokens[1])
            month = months.firstIndex(of: tokens[2].lowercased())
            clock = tokens[4]
            // RFC 850's two-digit year: the RFC reads one that looks more than 50 years
            // ahead as the past century; 70 draws that line for any date a file can have.
            year = Int(tokens[3]).map { tokens[3].count == 2 ? ($0 < 70 ? 2000 + $0 : 1900 + $0) : $0 }
        }
        let time = clock.split(separator: ":", omittingEmptySubsequences: false).map { Int($0) }
        guard let day, let month, let year, time.count == 3, let hour = time[0], let minute = time[1], let second = time[2],
              (1...31).contains(day), (1...9999).contains(year), (0...23).contains(hour), (0...59).contains(minute),
              (0...60).contains(second) else { return nil }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        return timegm(&parts)
    }

    /// The IMF-fixdate every current client sends, read from its 29 bytes in place: the
    /// general parser's tokens and strings cost far more, on every revalidation.
    private static func parseFixdate(_ text: String) -> Int? {
        var text = text
        return text.withUTF8 { bytes -> Int? in
            guard bytes.count == 29, bytes[3] == UInt8(ascii: ","), bytes[4] == 0x20, bytes[7] == 0x20, bytes[11] == 0x20,
                  bytes[16] == 0x20, bytes[19] == UInt8(ascii: ":"), bytes[22] == UInt8(ascii: ":"), bytes[25] == 0x20,
                  bytes[26] == UInt8(ascii: "G"), bytes[27] == UInt8(ascii: "M"), bytes[28] == UInt8(ascii: "T") else { return nil }
            func number(_ start: Int, _ count: Int) -> Int? {
                var value = 0
                for i in start..<(start + count) {
                    let digit = Int(bytes[i]) - 48
                    guard (0...9).contains(digit) else { return nil }
                    value = value * 10 + digit
                }
                return value
            }
            let name = (Int(bytes[8] | 0x20) << 16) | (Int(bytes[9] | 0x20) << 8) | Int(bytes[10] | 0x20)
            guard let month = monthKeys.firstIndex(of: name), let day = number(5, 2), let year = number(12, 4),
                  let hour = number(17, 2), let minute = number(20, 2), let second = number(23, 2),
                  (1...31).contains(day), year >= 1, (0...23).contains(hour), (0...59).contains(minute), (0...60).contains(second)
            else { return nil }
            return daysSinceEpoch(year: year, month: month + 1, day: day) * 86_400 + hour * 3_600 + minute * 60 + second
        }
    }

    /// The month names' three lowercase letters as one integer each.
    private static let monthKeys: [Int] = months.map { name in name.utf8.reduce(0) { $0 << 8 | Int($1) } }

    /// Days from 1970-01-01 to `year`-`month`-`day` in the proleptic Gregorian calendar
    /// (months 1...12): whole 400-year eras, then the years and days within one, counting
    /// years from March so the leap day falls last.
    private static func daysSinceEpoch(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}
