@testable import Chroma

extension Mailbox {
    /// Runs up to `limit` jobs outside any loop, as the mailbox tests do: they queue closures
    /// and functions only, so an executor job reaching here is a bug in the test.
    func run(limit: Int) -> Int {
        run(limit: limit, executorJobs: { _, _ in preconditionFailure("the mailbox tests queue no executor jobs") })
    }
}
