import CChroma

/// A closure job queued with chains on: the job and the chain it runs with, in one record
/// from the posting thread's free list, queued as a function job whose function
/// (`trampoline`) installs the chain, runs the closure and gives the record to the running
/// thread's free list. So a chained post allocates nothing in steady state (a loop that
/// queues its own follow-ups recycles the same few records), and with chains off none of
/// this is on any path.
///
/// A record moves between threads with its job (the queues order the handover); each free
/// list is its own thread's, capped at `cachedRecords`, beyond which records are freed.
enum ChainedJob {
    struct Record {
        var chain: chroma_chain
        var job: Job
        var next: UnsafeMutablePointer<Record>?
    }

    static let cachedRecords = 1024

    /// The function job that runs `body` as `color` with the chain of the callback queuing
    /// it now: the record owns the closure until it runs (or `discard` drops it).
    @inline(__always)
    static func make(color: UInt64, site: UInt64, body: consuming @escaping @Sendable () -> Void) -> Job {
        let record = take()
        // Written in place: the chain by C, the job as four words; the record is trivial.
        chroma_chain_for_child(record.pointer(to: \.chain)!)
        record.pointer(to: \.job)!.initialize(to: Job(color: color, site: site, body: body))
        return Job(color: color, site: site, function: trampoline, context: UnsafeMutableRawPointer(record))
    }

    /// For a job the queue refused: drops the closure unrun and recycles the record.
    static func discard(_ job: Job) {
        let record = UnsafeMutablePointer(mutating: job.word1.unsafelyUnwrapped.assumingMemoryBound(to: Record.self))
        Job.discard(record.pointer(to: \.job)!)
        give(record)
    }

    private static let trampoline: @convention(c) (UnsafeMutableRawPointer?) -> Void = { raw in
        let record = raw.unsafelyUnwrapped.assumingMemoryBound(to: Record.self)
        Chain.run(at: record.pointer(to: \.chain)!) {
            Job.runClosure(at: UnsafeMutableRawPointer(record.pointer(to: \.job)!).advanced(by: 8))
        }
        give(record)
    }

    /// Frees this thread's free list (a loop thread's last act: nothing it ran can give a
    /// record back after it).
    static func releaseCachedRecords() {
        var next = chroma_chain_free_list()?.assumingMemoryBound(to: Record.self)
        chroma_set_chain_free_list(nil, 0)
        while let record = next {
            next = record.pointee.next
            record.deallocate()
        }
    }

    @inline(__always) private static func take() -> UnsafeMutablePointer<Record> {
        guard let head = chroma_chain_free_list()?.assumingMemoryBound(to: Record.self) else {
            return .allocate(capacity: 1)
        }
        chroma_set_chain_free_list(UnsafeMutableRawPointer(head.pointee.next), chroma_chain_free_count() - 1)
        return head
    }

    /// Takes back a record whose job ran (or was dropped): its closure is gone, the rest is
    /// trivial.
    @inline(__always) private static func give(_ record: UnsafeMutablePointer<Record>) {
        let count = chroma_chain_free_count()
        guard count < cachedRecords else {
            record.deallocate()
            return
        }
        record.pointee.next = chroma_chain_free_list()?.assumingMemoryBound(to: Record.self)
        chroma_set_chain_free_list(UnsafeMutableRawPointer(record), count + 1)
    }
}
