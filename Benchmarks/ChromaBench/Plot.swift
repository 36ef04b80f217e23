import ArgumentParser
import Glibc

// Charts of a table as standalone SVG, written as text: bars for the ratios, lines for rows
// that vary with the loop count. No package and no fonts or scripts, so the files render the
// same in a browser, on GitHub and under `rsvg-convert`.

// MARK: The option

/// `--plot DIR`, one option group for every table, so a command adds a declaration and a
/// call, and the charts come from the same `Report` that `--json` prints.
struct PlotOption: ParsableArguments {
    @Option(name: .customLong("plot"),
            help: ArgumentHelp("Also write SVG charts into this folder (created when missing): <scenario>.svg (the ratios) and, "
                               + "where rows vary with the loop count, <scenario>-scaling.svg.", valueName: "dir"))
    var directory: String?

    /// Writes the charts only when `--plot` was given, and names each file on stderr, so that
    /// stdout stays the table or the one JSON object scripts read.
    func write(_ report: Report, targets: [(String, PlotTarget)] = []) throws {
        guard let directory else { return }
        for path in try report.plot(to: directory, targets: targets) { writeStderr("wrote \(path)\n") }
    }
}

/// What a ratio has to reach to meet its target, so a chart can mark the target and say
/// whether the bar meets it.
enum PlotTarget {
    case atLeast(Double)
    case atMost(Double)

    /// The HTTP table's own targets, so its chart never restates them.
    init(_ target: HTTPBenchTarget) {
        switch target {
        case .atLeast(let x): self = .atLeast(x)
        case .atMost(let x): self = .atMost(x)
        }
    }

    /// Where the marker goes on the ratio axis.
    var value: Double {
        switch self {
        case .atLeast(let x), .atMost(let x): return x
        }
    }

    /// Printed beside the bar's label, since a marker alone does not say which way is good.
    var text: String {
        switch self {
        case .atLeast(let x): return "target ≥ " + fixed(x, 2)
        case .atMost(let x): return "target ≤ " + fixed(x, 2)
        }
    }

    /// Colours the bar: a latency ratio must stay below its target, a rate ratio above.
    func isMet(by value: Double) -> Bool {
        switch self {
        case .atLeast(let x): return value >= x
        case .atMost(let x): return value <= x
        }
    }

    /// The targets of BENCHMARKS.md's verdict tables, matched on the ratio names the tables
    /// build, so the commands need not carry them (the HTTP table passes its own). A scaling
    /// target for more loops than `cores` is left out: those loops share cores, so it cannot apply.
    static func known(scenario: String, ratio: String, cores: Int) -> PlotTarget? {
        let sides = ratio.split(separator: " / ").map(String.init)
        guard sides.count == 2 else { return nil }
        let (a, b) = (sides[0], sides[1])
        let aWords = a.split(separator: " ").map(String.init)
        switch scenario {
        case "dispatch":
            if b == "chroma local 1", aWords.count == 3, aWords[1] == "local", let n = Int(aWords[2]) {
                return n <= cores ? .atLeast(0.9 * Double(n)) : nil
            }
            guard b.hasPrefix("c-libevent ") else { return nil }
            if a == "chroma local 1" { return .atLeast(2.5) }
            if a.hasPrefix("chroma fresh ") { return .atLeast(0.8) }
            if a == "chroma cross 1" { return .atLeast(1.0) }
        case "steal":
            // "stealing <row> <loops>", the row's target as the steal table prints it (">= 1.8").
            guard aWords.count >= 3, let row = StealRow(rawValue: aWords[1]) else { return nil }
            if a.hasSuffix(" p99") { return .atMost(1.0) }
            return Double(row.target.filter { $0.isNumber || $0 == "." }).map { .atLeast($0) }
        case "paper":
            let bWords = b.split(separator: " ")
            guard let n = aWords.last.flatMap({ Int($0) }), n <= cores, let base = bWords.last.flatMap({ Int($0) }) else { return nil }
            return .atLeast(0.85 * Double(n) / Double(base))
        case "disk":
            if b.hasPrefix("node ") { return a.hasPrefix("chroma cached") ? .atLeast(4) : nil }
            if a.hasPrefix("cold: chroma cached") { return .atLeast(0.97) }
            guard b == "sync pread, 1 thread", let loops = loopCount(in: a)?.loops else { return nil }
            if a.hasPrefix("chroma pool"), loops == 1 { return .atLeast(0.8) }
            if a.hasPrefix("chroma cached") { return .atLeast(loops == 1 ? 0.9 : 0.8 * Double(loops)) }
        case "hop":
            if a == "chroma cross-color" { return .atLeast(1.0) }
            if a == "chroma same-color" { return .atLeast(2.0) }
        default:
            break
        }
        return nil
    }
}

// MARK: Writing

extension Report {
    /// Writes `<scenario>.svg` (the ratios) and, where rows vary with the loop count,
    /// `<scenario>-scaling.svg`, and returns their paths. A table without ratios still gets
    /// its file, saying so, so that an embedded image never goes missing.
    func plot(to directory: String, targets: [(String, PlotTarget)] = []) throws -> [String] {
        try makeDirectories(directory)
        let folder = directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        var given: [String: PlotTarget] = [:]
        for (name, target) in targets where given[name] == nil { given[name] = target }
        // A ratio against a peer that measured nothing is infinite or NaN: it has no bar to draw.
        let bars = ratios.filter { $0.value.isFinite }.map { ratio in
            PlotBar(name: ratio.name, value: ratio.value,
                    target: given[ratio.name] ?? PlotTarget.known(scenario: scenario, ratio: ratio.name, cores: machine.nproc))
        }
        var written: [String] = []
        let barPath = "\(folder)/\(scenario).svg"
        try writeText(ratioChart(bars), to: barPath)
        written.append(barPath)
        let curves = scalingSeries()
        if !curves.isEmpty {
            let curvePath = "\(folder)/\(scenario)-scaling.svg"
            try writeText(scalingChart(curves), to: curvePath)
            written.append(curvePath)
        }
        return written
    }

    /// Rows that differ only in their loop count, as one series each: a curve needs two
    /// points, so a single measured count draws nothing.
    func scalingSeries() -> [PlotSeries] {
        var order: [String] = []
        var points: [String: [(x: Int, y: Double)]] = [:]
        for row in rows {
            guard row.opsPerSecond.isFinite, let (series, loops) = loopCount(in: row.name) else { continue }
            if points[series] == nil { order.append(series) }
            points[series, default: []].append((loops, row.opsPerSecond))
        }
        return order.compactMap { name in
            let sorted = points[name]!.sorted { $0.x < $1.x }
            return Set(sorted.map(\.x)).count >= 2 ? PlotSeries(name: name, points: sorted) : nil
        }
    }

    /// The machine line every printed table starts with: rates mean little without it.
    private var subtitle: String { "\(machine.nproc) cores, \(machine.cpu)" }

    /// What one operation of this table is, for the rate axis.
    private var rateUnit: String {
        switch scenario {
        case "dispatch", "steal": return "callbacks/s"
        case "disk": return "reads/s"
        case "hop": return "calls/s"
        case "echo", "http", "paper": return "requests/s"
        default: return "ops/s"
        }
    }

    // MARK: Ratio bars

    /// Horizontal bars, each under its own label line: ratio names run to 50 characters,
    /// which a vertical bar's axis could only show slanted or cut.
    func ratioChart(_ bars: [PlotBar]) -> String {
        let width = 720.0, left = 20.0, right = 20.0
        let barsRight = width - right - 52  // room for the value printed after the longest bar
        let rowHeight = 40.0, barHeight = 16.0
        let top = 86.0
        var svg = SVGCanvas(width: width)
        svg.text("\(scenario): ratios", x: left, y: 28, size: 17, weight: "bold")
        svg.text(subtitle, x: left, y: 48, size: 12, fill: PlotStyle.muted)
        guard !bars.isEmpty else {
            svg.text("no ratios in this run (a peer or a second loop count was missing)", x: left, y: top + 10, size: 13)
            svg.height = top + 40
            return svg.document()
        }
        let hasTargets = bars.contains { $0.target != nil }
        var legendX = left
        func legend(_ label: String, _ draw: (inout SVGCanvas, Double) -> Void) {
            draw(&svg, legendX)
            svg.text(label, x: legendX + 22, y: 70, size: 12)
            legendX += 22 + textWidth(label, size: 12) + 22
        }
        legend("1.0 = parity") { s, x in s.line(x + 8, 61, x + 8, 75, stroke: PlotStyle.ink, width: 1.5) }
        if hasTargets {
            legend("target") { s, x in s.line(x + 8, 60, x + 8, 76, stroke: PlotStyle.target, width: 2, dash: "4 3") }
            let met = bars.compactMap { bar in bar.target.map { $0.isMet(by: bar.value) } }
            if met.contains(true) { legend("meets its target") { s, x in s.rect(x, 62, 16, 12, fill: PlotStyle.met) } }
            if met.contains(false) { legend("misses it") { s, x in s.rect(x, 62, 16, 12, fill: PlotStyle.missed) } }
            if met.count < bars.count { legend("no target") { s, x in s.rect(x, 62, 16, 12, fill: PlotStyle.neutral) } }
        }
        let highest = bars.map { max($0.value, $0.target?.value ?? 0) }.max() ?? 1
        let axis = NiceAxis(upTo: max(highest, 1.0), ticks: 6)
        func x(_ value: Double) -> Double { left + (barsRight - left) * min(max(value, 0), axis.top) / axis.top }
        let bottom = top + rowHeight * Double(bars.count)
        for tick in axis.values {
            svg.text(axis.label(tick), x: x(tick), y: bottom + 16, size: 11, anchor: "middle", fill: PlotStyle.muted)
        }
        svg.text("ratio (×)", x: (left + barsRight) / 2, y: bottom + 34, size: 12, anchor: "middle", fill: PlotStyle.muted)
        for (index, bar) in bars.enumerated() {
            let rowTop = top + rowHeight * Double(index)
            let targetText = bar.target?.text ?? ""
            let labelRoom = width - left - right - (targetText.isEmpty ? 0 : textWidth(targetText, size: 11) + 16)
            svg.text(fitted(bar.name, width: labelRoom, size: 12), x: left, y: rowTop + 13, size: 12)
            if !targetText.isEmpty {
                svg.text(targetText, x: width - right, y: rowTop + 13, size: 11, anchor: "end", fill: PlotStyle.target)
            }
            let barTop = rowTop + 18
            // Gridlines only across the bar's band, so they never cross a label.
            for tick in axis.values {
                svg.line(x(tick), barTop - 4, x(tick), barTop + barHeight + 4, stroke: PlotStyle.grid, width: 1)
            }
            let fill = bar.target.map { $0.isMet(by: bar.value) ? PlotStyle.met : PlotStyle.missed } ?? PlotStyle.neutral
            let end = x(bar.value)
            svg.rect(left, barTop, max(end - left, 1), barHeight, fill: fill)
            // A third decimal where two would print a missed target as reached (0.97 against ≥ 0.97).
            let digits = bar.target.map { fixed(bar.value, 2) == fixed($0.value, 2) } == true ? 3 : 2
            let valueText = fixed(bar.value, digits) + "×"
            // After the bar; where a parity or target mark would run through it, inside the bar's
            // end when the bar is long enough, else past the mark.
            let valueWidth = textWidth(valueText, size: 12)
            let marks = ([x(1)] + (bar.target.map { [x($0.value)] } ?? [])).sorted()
            var valueX = end + 5
            if marks.contains(where: { $0 >= valueX - 3 && $0 <= valueX + valueWidth + 6 }),
               end - left > valueWidth + 12,
               !marks.contains(where: { $0 >= end - valueWidth - 9 && $0 <= end }) {
                svg.text(valueText, x: end - 5, y: barTop + 12.5, size: 12, anchor: "end", weight: "bold", fill: "#ffffff")
            } else {
                for mark in marks where mark >= valueX - 3 && mark <= valueX + valueWidth + 6 { valueX = mark + 5 }
                svg.text(valueText, x: valueX, y: barTop + 12.5, size: 12, weight: "bold")
            }
            if let target = bar.target {
                svg.line(x(target.value), barTop - 3, x(target.value), barTop + barHeight + 3,
                         stroke: PlotStyle.target, width: 2, dash: "4 3")
            }
        }
        // The parity marks last, over the bars, each across its own bar's band.
        for index in bars.indices {
            let barTop = top + rowHeight * Double(index) + 18
            svg.line(x(1), barTop - 4, x(1), barTop + barHeight + 4, stroke: PlotStyle.ink, width: 1.5)
        }
        svg.line(left, bottom, barsRight, bottom, stroke: PlotStyle.muted, width: 1)
        for tick in axis.values { svg.line(x(tick), bottom, x(tick), bottom + 4, stroke: PlotStyle.muted, width: 1) }
        svg.height = bottom + 48
        return svg.document()
    }

    // MARK: Scaling lines

    /// Rate against loops, a line per system: a series' colour says what it runs (its name
    /// after the first word) and its dash says whose it is (the first word), so a Chroma row
    /// and its C peer share a colour, one solid and one dashed.
    func scalingChart(_ series: [PlotSeries]) -> String {
        let width = 720.0, left = 76.0, right = 24.0, top = 70.0, plotHeight = 300.0
        let bottom = top + plotHeight
        var svg = SVGCanvas(width: width)
        svg.text("\(scenario): scaling over loops", x: 20, y: 28, size: 17, weight: "bold")
        svg.text(subtitle, x: 20, y: 48, size: 12, fill: PlotStyle.muted)

        let loops = Array(Set(series.flatMap { $0.points.map(\.x) })).sorted()
        let (low, high) = (Double(loops.first!), Double(loops.last!))
        let logarithmic = high / low >= 4  // 1, 2, 4, 8, 16 evenly spaced, as doublings
        func x(_ n: Int) -> Double {
            let t = logarithmic ? log2(Double(n) / low) / log2(high / low) : (Double(n) - low) / (high - low)
            return left + 20 + (width - right - 20 - left - 20) * t
        }
        let axis = NiceAxis(upTo: series.flatMap { $0.points.map(\.y) }.max() ?? 1, ticks: 6)
        func y(_ value: Double) -> Double { bottom - plotHeight * value / axis.top }

        for tick in axis.values {
            svg.line(left, y(tick), width - right, y(tick), stroke: PlotStyle.grid, width: 1)
            svg.text(axis.rateLabel(tick), x: left - 8, y: y(tick) + 4, size: 11, anchor: "end", fill: PlotStyle.muted)
        }
        for n in loops {
            svg.line(x(n), bottom, x(n), bottom + 5, stroke: PlotStyle.muted, width: 1)
            svg.text(String(n), x: x(n), y: bottom + 19, size: 11, anchor: "middle", fill: PlotStyle.muted)
        }
        svg.line(left, top, left, bottom, stroke: PlotStyle.muted, width: 1)
        svg.line(left, bottom, width - right, bottom, stroke: PlotStyle.muted, width: 1)
        let xTitle = scenario == "disk" ? "loops (threads, for sync pread)" : "loops"
        svg.text(xTitle, x: (left + width - right) / 2, y: bottom + 38, size: 12, anchor: "middle", fill: PlotStyle.muted)
        svg.text(rateUnit, x: 18, y: top + plotHeight / 2, size: 12, anchor: "middle", fill: PlotStyle.muted, rotate: -90)

        var kinds: [String] = [], owners: [String] = []
        func style(_ name: String) -> (colour: String, dash: String?) {
            let words = name.split(separator: " ", maxSplits: 1).map(String.init)
            let owner = words[0], kind = words.count > 1 ? words[1] : words[0]
            if !kinds.contains(kind) { kinds.append(kind) }
            if !owners.contains(owner) { owners.append(owner) }
            let colour = PlotStyle.palette[kinds.firstIndex(of: kind)! % PlotStyle.palette.count]
            return (colour, PlotStyle.dashes[owners.firstIndex(of: owner)! % PlotStyle.dashes.count])
        }
        let styles = series.map { style($0.name) }
        for (line, look) in zip(series, styles) {
            let points = line.points.map { (x($0.x), y($0.y)) }
            svg.polyline(points, stroke: look.colour, width: 2.5, dash: look.dash)
            for point in points { svg.circle(point.0, point.1, r: 3.5, fill: look.colour) }
        }

        // The legend under the axis, in as many columns as the longest name allows.
        let column = min(width - 40, (series.map { textWidth($0.name, size: 12) }.max() ?? 0) + 44)
        let columns = max(1, Int((width - 40) / column))
        let legendTop = bottom + 62
        for (index, (line, look)) in zip(series, styles).enumerated() {
            let lx = 20 + column * Double(index % columns), ly = legendTop + 20 * Double(index / columns)
            svg.line(lx, ly - 4, lx + 28, ly - 4, stroke: look.colour, width: 2.5, dash: look.dash)
            svg.circle(lx + 14, ly - 4, r: 3.5, fill: look.colour)
            svg.text(fitted(line.name, width: column - 40, size: 12), x: lx + 36, y: ly, size: 12)
        }
        svg.height = legendTop + 20 * Double((series.count + columns - 1) / columns) + 8
        return svg.document()
    }
}

/// One ratio as drawn: its target looked up once, for the colour and the marker.
struct PlotBar {
    let name: String
    let value: Double
    let target: PlotTarget?
}

/// One line of a scaling chart: a system's rate at each loop count it was measured at.
struct PlotSeries {
    let name: String
    let points: [(x: Int, y: Double)]
}

/// Colours and dashes in one place, so the two charts read alike; the palette is distinct
/// enough side by side and stays legible for the common colour-vision deficiencies.
enum PlotStyle {
    static let ink = "#222222"
    static let muted = "#555555"
    static let grid = "#e3e3e3"
    static let neutral = "#4c78a8"
    static let met = "#4f9a48"
    static let missed = "#e0702f"
    static let target = "#b8232f"
    static let palette = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d", "#eeca3b", "#636363", "#ff9da6"]
    static let dashes: [String?] = [nil, "7 4", "2 3", "10 3 2 3"]
}

/// Axis ticks at round steps (1, 2 or 5 × 10ⁿ) from zero, so that labels read as plain
/// numbers and bars and lines start from a true zero.
struct NiceAxis {
    let step: Double
    let top: Double

    init(upTo highest: Double, ticks: Int) {
        let span = highest > 0 && highest.isFinite ? highest * 1.05 : 1
        let raw = span / Double(max(1, ticks))
        let magnitude = pow(10, floor(log10(raw)))
        let scaled = raw / magnitude
        step = (scaled <= 1 ? 1 : scaled <= 2 ? 2 : scaled <= 5 ? 5 : 10) * magnitude
        top = ceil(span / step) * step
    }

    /// Every tick from zero to the top, the gridlines and labels of the axis.
    var values: [Double] { (0...Int((top / step).rounded())).map { Double($0) * step } }

    /// As many decimals as the step needs in `unit`, so 0.5 steps never print as 1.
    private func decimals(_ unit: Double) -> Int { max(0, Int(ceil(-log10(step / unit) - 1e-9))) }

    /// A ratio tick, plain.
    func label(_ value: Double) -> String { fixed(value, decimals(1)) }

    /// Rates in k or M, the way the printed tables give them.
    func rateLabel(_ value: Double) -> String {
        let (unit, suffix) = top >= 1e6 ? (1e6, "M") : top >= 1e3 ? (1e3, "k") : (1.0, "")
        return value == 0 ? "0" : fixed(value / unit, decimals(unit)) + suffix
    }
}

/// An SVG document kept as text: the charts need only rectangles, lines, polylines, circles
/// and text, which a few string helpers write without a package.
struct SVGCanvas {
    let width: Double
    var height = 0.0
    private var body: [String] = []

    init(width: Double) { self.width = width }

    /// Bars and legend swatches.
    mutating func rect(_ x: Double, _ y: Double, _ w: Double, _ h: Double, fill: String) {
        body.append("<rect x=\"\(n(x))\" y=\"\(n(y))\" width=\"\(n(w))\" height=\"\(n(h))\" fill=\"\(fill)\"/>")
    }

    /// Gridlines, axes, parity and target marks; `dash` is an SVG dash array.
    mutating func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, stroke: String, width: Double, dash: String? = nil) {
        body.append("<line x1=\"\(n(x1))\" y1=\"\(n(y1))\" x2=\"\(n(x2))\" y2=\"\(n(y2))\" stroke=\"\(stroke)\" "
                    + "stroke-width=\"\(n(width))\"\(dash.map { " stroke-dasharray=\"\($0)\"" } ?? "")/>")
    }

    /// A series' curve, in one element so its dashes run on across the points.
    mutating func polyline(_ points: [(Double, Double)], stroke: String, width: Double, dash: String? = nil) {
        let list = points.map { "\(n($0.0)),\(n($0.1))" }.joined(separator: " ")
        body.append("<polyline points=\"\(list)\" fill=\"none\" stroke=\"\(stroke)\" stroke-width=\"\(n(width))\" "
                    + "stroke-linejoin=\"round\"\(dash.map { " stroke-dasharray=\"\($0)\"" } ?? "")/>")
    }

    /// The measured points, so a two-point line still shows where it was measured.
    mutating func circle(_ cx: Double, _ cy: Double, r: Double, fill: String) {
        body.append("<circle cx=\"\(n(cx))\" cy=\"\(n(cy))\" r=\"\(n(r))\" fill=\"\(fill)\"/>")
    }

    /// Labels; the content is escaped here, since row names come from the command line.
    mutating func text(_ content: String, x: Double, y: Double, size: Double, anchor: String = "start",
                       weight: String = "normal", fill: String = PlotStyle.ink, rotate: Double? = nil) {
        let turn = rotate.map { " transform=\"rotate(\(n($0)) \(n(x)) \(n(y)))\"" } ?? ""
        body.append("<text x=\"\(n(x))\" y=\"\(n(y))\" font-size=\"\(n(size))\" text-anchor=\"\(anchor)\" "
                    + "font-weight=\"\(weight)\" fill=\"\(fill)\"\(turn)>\(content.xmlEscaped)</text>")
    }

    /// The whole file, on a white ground so the charts stay readable on a dark page.
    func document() -> String {
        let size = "width=\"\(n(width))\" height=\"\(n(height))\" viewBox=\"0 0 \(n(width)) \(n(height))\""
        return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            + "<svg xmlns=\"http://www.w3.org/2000/svg\" \(size) font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
            + "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n"
            + body.joined(separator: "\n") + "\n</svg>\n"
    }

    /// Coordinates to a tenth of a pixel keep the files small and diffs readable.
    private func n(_ value: Double) -> String { fixed(value, 1) }
}

// MARK: Helpers

/// A row name's loop count, from the names the tables build ("chroma local 2", "sfs
/// stealing 4", "chroma cached c64, 2 loops", "sync pread, 2 threads"), and the name without it.
func loopCount(in name: String) -> (series: String, loops: Int)? {
    var words = name.split(separator: " ").map(String.init)
    if let last = words.last, ["loop", "loops", "thread", "threads"].contains(last) { words.removeLast() }
    guard words.count >= 2, let loops = Int(words.last!), loops >= 1 else { return nil }
    words.removeLast()
    var series = words.joined(separator: " ")
    if series.hasSuffix(",") { series.removeLast() }
    return (series, loops)
}

/// About how wide a line of text draws: there is no font metric to ask, so a mean advance
/// a little wider than DejaVu Sans's keeps estimates on the safe side.
func textWidth(_ text: String, size: Double) -> Double { Double(text.count) * size * 0.62 }

/// The text, cut with an ellipsis when it would run past `width`.
func fitted(_ text: String, width: Double, size: Double) -> String {
    guard textWidth(text, size: size) > width else { return text }
    let keep = max(1, Int(width / (size * 0.62)) - 1)
    return String(text.prefix(keep)) + "…"
}

extension String {
    /// Text safe inside an SVG element or attribute (`&`, `<`, `>`, `"`).
    var xmlEscaped: String {
        var out = ""
        for c in self {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }
}

/// An error that prints as its message, the way ArgumentParser shows a failed run.
struct PlotError: Error, CustomStringConvertible {
    let description: String
}

/// `mkdir -p`: the folder is usually a fresh `docs/plots`.
private func makeDirectories(_ path: String) throws {
    var prefix = path.hasPrefix("/") ? "/" : ""
    for part in path.split(separator: "/") {
        prefix += part
        if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
            throw PlotError(description: "cannot create \(prefix): \(String(cString: strerror(errno)))")
        }
        prefix += "/"
    }
}

/// The whole file at once, failing loudly, so a full disk never leaves a silent half chart.
private func writeText(_ text: String, to path: String) throws {
    guard let file = fopen(path, "w") else {
        throw PlotError(description: "cannot write \(path): \(String(cString: strerror(errno)))")
    }
    let wrote = fputs(text, file) >= 0
    if fclose(file) != 0 || !wrote {
        throw PlotError(description: "cannot write \(path): \(String(cString: strerror(errno)))")
    }
}

/// Straight to the descriptor, as `progress` does: stdout may be the one JSON object.
private func writeStderr(_ text: String) {
    var line = text
    line.withUTF8 { buffer in _ = write(STDERR_FILENO, buffer.baseAddress, buffer.count) }
}
