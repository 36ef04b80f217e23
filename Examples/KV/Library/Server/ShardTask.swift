import Chroma

/// A single-key command on its way to its shard's color and its answer on the way back:
/// one object for both hops, sent as the context of allocation-free function jobs
/// (`execute(on:context:_:)`), where two closures would allocate four contexts.
///
/// Threads: made on the connection's color; `runOnShard` on the shard's color; `finish` on
/// the connection's color again. Each hop is a post, which orders the fields' writes
/// before the next hop's reads.
final class ShardTask: @unchecked Sendable {
    // Safe to send: `reply` and `durable` are written before the post back and read after
    // it; the rest is immutable.
    let session: KVSession
    let shard: Shard
    let request: [[UInt8]]
    let command: Command
    let sequence: Int
    private var reply = RESPReply.null
    private var durable = true

    init(session: KVSession, shard: Shard, request: [[UInt8]], command: Command, sequence: Int) {
        self.session = session
        self.shard = shard
        self.request = request
        self.command = command
        self.sequence = sequence
    }

    /// Queues the task on its shard's color; false (nothing queued) once the runtime stops.
    func send() -> Bool {
        shard.queued.add(1, ordering: .relaxed)
        let context = Unmanaged.passRetained(self).toOpaque()
        do {
            try session.server.runtime.execute(on: shard.color, context: context) { raw in
                Unmanaged<ShardTask>.fromOpaque(raw!).takeUnretainedValue().runOnShard(raw!)
            }
            return true
        } catch {
            Unmanaged<ShardTask>.fromOpaque(context).release()
            shard.queued.subtract(1, ordering: .relaxed)
            return false
        }
    }

    /// On the shard's color: runs the command, logs what it changed, and sends the answer
    /// back (after the disk, with `always`). `raw` is this task, retained once.
    private func runOnShard(_ raw: UnsafeMutableRawPointer) {
        shard.queued.subtract(1, ordering: .relaxed)
        reply = ShardCommands.run(request, command: command, store: &shard.store, now: KVClock.now())
        let server = session.server
        if let wait = server.record(shard) {
            server.whenDurable(wait) { [self] durable in
                self.durable = durable
                sendBack(Unmanaged.passUnretained(self).toOpaque())  // `raw`: the retain still held
            }
        } else {
            sendBack(raw)
        }
    }

    private func sendBack(_ raw: UnsafeMutableRawPointer) {
        do {
            try session.server.runtime.execute(on: session.color, context: raw) { raw in
                Unmanaged<ShardTask>.fromOpaque(raw!).takeRetainedValue().finish()
            }
        } catch {
            Unmanaged<ShardTask>.fromOpaque(raw).release()  // stopping: the connection is closing
        }
    }

    /// On the connection's color.
    private func finish() {
        session.answer(durable ? reply : KVServer.logFailed, to: sequence)
    }
}
