import Chroma
import Glibc

/// chroma-kv's server: a key's shard is a color, and the shard's store is touched only on
/// that color, so no lock guards any key. A connection parses on its own color, hands each
/// command to its key's shard, and puts the answers back in request order.
///
/// Threads: `init` and `listen` from any thread while the runtime runs; everything else
/// happens in callbacks on the shards' and the connections' colors.
public final class KVServer: Sendable {
    let runtime: Runtime
    let shards: [Shard]
    let limits: RESPLimits

    /// A server with `shardCount` shards (default 16 per loop), each on a fresh color, and a
    /// sweep per shard every 100 ms that removes expired keys nobody reads.
    public init(runtime: Runtime, shardCount: Int? = nil, limits: RESPLimits = RESPLimits()) throws(ChromaError) {
        self.runtime = runtime
        self.limits = limits
        let count = shardCount ?? 16 * runtime.loopCount
        guard count > 0 else { throw .invalidArgument(operation: "KVServer", detail: "shardCount must be positive, not \(count)") }
        shards = (0..<count).map { _ in Shard(color: runtime.makeColor()) }
        for shard in shards {
            _ = try runtime.schedule(after: .milliseconds(100), repeating: .milliseconds(100), on: shard.color) {
                _ = shard.store.expire(now: KVServer.now(), limit: 64)
            }
        }
    }

    /// Listens on `port` (0: any) at `host`; every connection is served until it closes or
    /// the runtime stops.
    public func listen(host: String = "0.0.0.0", port: UInt16) throws(ChromaError) -> Listener {
        try runtime.listen(host: host, port: port) { [self] connection in
            let session = KVSession(server: self, connection: connection)
            connection.onBytes { bytes in session.received(bytes) }
        }
    }

    /// How many shards there are.
    public var shardCount: Int { shards.count }

    /// The shard that holds `key` (FNV-1a over its bytes).
    func shard(for key: [UInt8]) -> Shard {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return shards[Int(hash % UInt64(shards.count))]
    }

    /// The shards' clock: monotonic milliseconds.
    static func now() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
    }
}

/// One shard: its color and its store.
final class Shard: @unchecked Sendable {
    // Safe to share: `store` is touched only in callbacks of `color`, which never overlap.
    let color: Color
    var store = ShardStore()

    init(color: Color) {
        self.color = color
    }
}
