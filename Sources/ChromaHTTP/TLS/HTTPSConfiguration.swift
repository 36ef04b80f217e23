import Chroma
import CLibeventOpenSSL
import Glibc

/// A server certificate chain and its private key, loaded once into an OpenSSL context
/// that every HTTPS connection of every loop is made from (`Runtime.serveHTTPS`).
///
/// Made on any thread; afterwards immutable, so one configuration may serve several
/// servers at once, from any thread. Connections negotiate TLS 1.2 or later.
public final class HTTPSConfiguration: @unchecked Sendable {
    // Safe to send: `context` is complete when `init` returns and never changed after;
    // OpenSSL (1.1 and later) locks the reference count and the state `SSL_new` reads, so
    // every loop may make connections from it at once.
    private let context: OpaquePointer
    /// The PEM file the certificate chain came from (the server's own certificate first).
    public let certificateFile: String
    /// The PEM file the private key came from.
    public let keyFile: String

    /// Loads the PEM certificate chain at `certificateFile` and the PEM private key at
    /// `keyFile` (unencrypted), and checks that they belong together. Any thread; reads
    /// both files before it returns.
    ///
    /// Throws `ChromaError.system` (call "open") naming the path of a file that cannot be
    /// opened, and `.invalidArgument` naming the path of a file that holds no certificate
    /// or no key, or both paths when the key does not match the certificate.
    public init(certificateFile: String, keyFile: String) throws(ChromaError) {
        let operation = "HTTPSConfiguration"
        try Self.requireReadable(certificateFile, role: "certificate file")
        try Self.requireReadable(keyFile, role: "key file")
        ERR_clear_error()
        guard let context = SSL_CTX_new(TLS_server_method()) else {
            throw .invalidArgument(operation: operation, detail: "SSL_CTX_new failed (\(Self.takeErrorText()))")
        }
        guard chroma_ssl_ctx_set_min_tls12(context) == 1 else {
            SSL_CTX_free(context)
            throw .invalidArgument(operation: operation, detail: "TLS 1.2 minimum refused (\(Self.takeErrorText()))")
        }
        chroma_ssl_ctx_set_modes(context)
        guard SSL_CTX_use_certificate_chain_file(context, certificateFile) == 1 else {
            SSL_CTX_free(context)
            throw .invalidArgument(operation: operation,
                                   detail: "\(certificateFile) holds no PEM certificate (\(Self.takeErrorText()))")
        }
        // Loading the key already compares it with the certificate; the check after it
        // catches a chain whose first certificate OpenSSL kept without its key.
        guard SSL_CTX_use_PrivateKey_file(context, keyFile, SSL_FILETYPE_PEM) == 1, SSL_CTX_check_private_key(context) == 1 else {
            SSL_CTX_free(context)
            let (reason, text) = Self.takeError()
            if reason == X509_R_KEY_VALUES_MISMATCH || reason == SSL_R_PRIVATE_KEY_MISMATCH {
                throw .invalidArgument(operation: operation,
                                       detail: "the key in \(keyFile) does not match the certificate in \(certificateFile) (\(text))")
            }
            throw .invalidArgument(operation: operation, detail: "\(keyFile) holds no PEM private key (\(text))")
        }
        self.context = context
        self.certificateFile = certificateFile
        self.keyFile = keyFile
    }

    deinit { SSL_CTX_free(context) }

    /// Opening first tells a missing or unreadable file (an errno) from one OpenSSL cannot parse.
    private static func requireReadable(_ path: String, role: String) throws(ChromaError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .system(operation: "HTTPSConfiguration: \(role) \(path)", call: "open", errno: errno) }
        close(fd)
    }

    /// The oldest error on this thread's OpenSSL queue, as text, and the queue emptied
    /// (libevent reads the same thread-local queue for its connections).
    private static func takeErrorText() -> String { takeError().text }

    /// The oldest error's reason code and text, the queue emptied.
    private static func takeError() -> (reason: Int32, text: String) {
        let code = ERR_get_error()
        ERR_clear_error()
        guard code != 0 else { return (0, "no OpenSSL error recorded") }
        var text = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &text, text.count)
        return (ERR_GET_REASON(code), String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }

    // MARK: Connections (the engine, loop thread)

    /// A bufferevent that runs the server side of a TLS handshake once evhttp gives it the
    /// accepted socket, and closes the socket and frees the session when freed. Nil when
    /// OpenSSL or libevent is out of memory (evhttp then closes the socket).
    func acceptingBufferevent(base: OpaquePointer) -> OpaquePointer? {
        guard let ssl = SSL_new(context) else {
            ERR_clear_error()
            return nil
        }
        guard let bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                       chroma_tls_bev_close_on_free()) else {
            SSL_free(ssl)  // libevent takes the session only when it succeeds
            return nil
        }
        // A client that closes the socket without TLS's close_notify (most do, after a
        // complete answer) ends the connection as an EOF, not as an error.
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1)
        return bev
    }

    /// Sends TLS's close_notify on `bev`'s session before the engine closes its socket, so
    /// a client reading to the end of the connection sees an orderly end rather than a
    /// truncation. Only after a finished handshake; never blocks (the socket is
    /// non-blocking, and a full socket simply drops the alert).
    static func sendCloseNotify(_ bev: OpaquePointer) {
        guard let ssl = bufferevent_openssl_get_ssl(bev), SSL_is_init_finished(ssl) == 1 else { return }
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
    }

    /// Encrypts `bytes` onto `bev`'s socket now, past its output buffer, once the handshake
    /// is finished; returns how many the session took (0 when it took none: the socket is
    /// full, or the session failed, which the bufferevent's next write then reports).
    /// OpenSSL requires a refused write to be retried with the same bytes, at least as many:
    /// so only bytes the bufferevent itself would write next (the start of its output, when
    /// it has no write of its own pending), or while it will write nothing else.
    @discardableResult
    static func writeNow(_ bev: OpaquePointer, _ bytes: UnsafeRawBufferPointer) -> Int {
        guard let ssl = bufferevent_openssl_get_ssl(bev), SSL_is_init_finished(ssl) == 1, bytes.count > 0 else { return 0 }
        let taken = SSL_write(ssl, bytes.baseAddress, Int32(clamping: bytes.count))
        ERR_clear_error()
        return max(0, Int(taken))
    }
}
