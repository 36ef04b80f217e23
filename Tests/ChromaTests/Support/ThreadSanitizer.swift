import Foundation

/// True when the suite runs under ThreadSanitizer (`make tsan` sets CHROMA_TSAN=1): stress
/// tests then run fewer operations, still far from trivial.
let underTSan = ProcessInfo.processInfo.environment["CHROMA_TSAN"] == "1"
