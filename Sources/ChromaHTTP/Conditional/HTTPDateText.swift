import Glibc

/// HTTP-dates (RFC 9110 §5.6.7) to and from seconds since 1970 UTC.
enum HTTPDateText {
    /// IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
    static func format(_ seconds: Int) -> String {
        var time = seconds
        var parts = tm()
        gmtime_r(&time, &parts)
        var text = [CChar](repeating: 0, count: 40)
        // strftime's names come from the C locale, which Chroma never changes.
        let count = strftime(&text, text.count, "%a, %d %b %Y %H:%M:%S GMT", &parts)
        return String(decoding: text[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]

    /// Any of the three forms a recipient must accept: IMF-fixdate, RFC 850
    /// ("Sunday, 06-Nov-94 08:49:37 GMT") and asctime ("Sun Nov  6 08:49:37 1994"); nil for
    /// anything else, which the conditional headers then ignore, as the RFC says.
    static func parse(_ text: String) -> Int? {
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
}
