/// One measured system in a scenario's table.
struct Row {
    let name: String
    let opsPerSecond: Double
    var allocsPerOp: Double? = nil
    var p50Microseconds: Double? = nil
    var p99Microseconds: Double? = nil
    /// Failed operations during the measurement (socket errors, error responses), where counted.
    var errors: Int? = nil
}

/// A scenario's results: rows and side-by-side ratios, printed as a table or as the one
/// JSON object scripts rely on (`scenario`, `machine`, `rows`, `ratios`; see BENCHMARKS.md).
struct Report {
    let scenario: String
    let machine: Machine
    var rows: [Row] = []
    var ratios: [(name: String, value: Double)] = []

    /// Says why the scenario did not run: `line` on stdout, or with `json` on stderr and the
    /// (empty) report on stdout, so scripts still get one JSON object.
    func skip(_ line: String, json: Bool) {
        if json {
            note(line)
            print(self.json())
        } else {
            print(line)
        }
    }

    func json() -> String {
        let rowText = rows.map { row in
            var fields = ["\"name\": \(row.name.jsonQuoted)", "\"ops_per_s\": \(fixed(row.opsPerSecond, 0))"]
            if let p50 = row.p50Microseconds { fields.append("\"p50_us\": \(fixed(p50, 1))") }
            if let p99 = row.p99Microseconds { fields.append("\"p99_us\": \(fixed(p99, 1))") }
            if let allocs = row.allocsPerOp { fields.append("\"allocs_per_op\": \(fixed(allocs, 3))") }
            if let errors = row.errors { fields.append("\"errors\": \(errors)") }
            return "{" + fields.joined(separator: ", ") + "}"
        }.joined(separator: ", ")
        let ratioText = ratios.map { "\($0.name.jsonQuoted): \(fixed($0.value, 3))" }.joined(separator: ", ")
        return "{\"scenario\": \(scenario.jsonQuoted), \"machine\": {\"nproc\": \(machine.nproc), \"cpu\": \(machine.cpu.jsonQuoted)}, "
            + "\"rows\": [\(rowText)], \"ratios\": {\(ratioText)}}"
    }
}

/// Progress on stderr, overwritten in place, so stdout stays clean for the table or JSON.
func progress(_ text: String) {
    var line = "\r\u{1B}[K" + text
    line.withUTF8 { buffer in _ = fwriteStderr(buffer) }
}

func endProgress() {
    var line = "\r\u{1B}[K"
    line.withUTF8 { buffer in _ = fwriteStderr(buffer) }
}

import Glibc
private func fwriteStderr(_ buffer: UnsafeBufferPointer<UInt8>) -> Int {
    write(STDERR_FILENO, buffer.baseAddress, buffer.count)
}
