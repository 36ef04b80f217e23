import Foundation

/// Lowers RLIMIT_NOFILE to just above the highest open descriptor and fills every free
/// one below it, so the next accept fails with EMFILE; `end()` undoes both.
final class DescriptorExhaustion {
    private var saved = rlimit()
    private var fillers: [Int32] = []
    private var ended = false

    init() {
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &saved)
        let highest = (0..<Int32(65536)).last { fcntl($0, F_GETFD) != -1 } ?? 0
        var tight = saved
        tight.rlim_cur = rlim_t(highest + 1)
        precondition(setrlimit(Int32(RLIMIT_NOFILE.rawValue), &tight) == 0)
        while true {
            let fd = open("/dev/null", O_RDONLY)
            if fd < 0 { break }
            fillers.append(fd)
        }
    }

    func end() {
        guard !ended else { return }
        ended = true
        for fd in fillers { Glibc.close(fd) }
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &saved)
    }
}
