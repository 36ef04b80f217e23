@_spi(Engine) import Chroma
import CLibevent
import Glibc

/// The `Date` header for one loop's answers, formatted once a second. evhttp formats it
/// for every answer that lacks one (gmtime and a printf, a tenth of evhttp's whole cost for
/// `/hello`; BENCHMARKS.md), as nginx does not. Loop thread.
final class HTTPDate {
    private var second = -1
    private var text = [CChar](repeating: 0, count: 40)

    func add(to headers: UnsafeMutablePointer<evkeyvalq>?) {
        let now = coarseRealtimeSeconds()
        if now != second {
            second = now
            var seconds = now
            var parts = tm()
            gmtime_r(&seconds, &parts)
            // strftime's names come from the C locale, which Chroma never changes.
            _ = strftime(&text, text.count, "%a, %d %b %Y %H:%M:%S GMT", &parts)
        }
        _ = evhttp_add_header(headers, "Date", text)
    }
}
