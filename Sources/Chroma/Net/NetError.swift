import Glibc
import SystemPackage

/// Why a network call failed: the operation, the address, and the reason.
public struct NetError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The reason a network call failed.
    public enum Code: Equatable, Sendable {
        case system(Errno)
        /// The connect did not complete within its timeout.
        case timedOut
        /// The host name did not resolve (`getaddrinfo`'s message).
        case resolution(String)
        /// The address could not be parsed.
        case invalidAddress
    }

    /// The call that failed ("listen", "connect").
    public let operation: String
    /// "host:port".
    public let address: String
    /// What went wrong.
    public let code: Code

    /// "operation address: reason", with errno's text and number for system errors.
    public var description: String {
        let reason: String
        switch code {
        case .system(let errno): reason = "\(String(cString: strerror(errno.rawValue))) (errno \(errno.rawValue))"
        case .timedOut: reason = "timed out"
        case .resolution(let message): reason = "cannot resolve: \(message)"
        case .invalidAddress: reason = "not an address"
        }
        return "\(operation) \(address): \(reason)"
    }
}
