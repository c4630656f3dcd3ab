/// A set of half-open byte ranges, kept sorted and merged: which bytes a buffer or cache file holds.
struct ByteRanges: Sendable, Equatable {
    private(set) var ranges: [Range<Int64>] = []

    init() {}

    var isEmpty: Bool { ranges.isEmpty }

    mutating func insert(_ range: Range<Int64>) {
        guard !range.isEmpty else { return }
        var lower = range.lowerBound, upper = range.upperBound
        var result: [Range<Int64>] = []
        result.reserveCapacity(ranges.count + 1)
        var placed = false
        for existing in ranges {
            if existing.upperBound < lower {
                result.append(existing)
            } else if existing.lowerBound > upper {
                if !placed { result.append(lower..<upper); placed = true }
                result.append(existing)
            } else {
                lower = min(lower, existing.lowerBound)
                upper = max(upper, existing.upperBound)
            }
        }
        if !placed { result.append(lower..<upper) }
        ranges = result
    }

    /// Forgets everything at or past `bound`.
    mutating func clip(to bound: Int64) {
        ranges = ranges.compactMap { range in
            if range.lowerBound >= bound { return nil }
            return range.lowerBound..<min(range.upperBound, bound)
        }
    }

    func contains(_ range: Range<Int64>) -> Bool {
        if range.isEmpty { return true }
        for existing in ranges where existing.lowerBound <= range.lowerBound {
            if existing.upperBound >= range.upperBound { return true }
        }
        return false
    }

    /// The parts of `range` not in the set, in order.
    func gaps(in range: Range<Int64>) -> [Range<Int64>] {
        var result: [Range<Int64>] = []
        var cursor = range.lowerBound
        for existing in ranges {
            if existing.upperBound <= cursor { continue }
            if existing.lowerBound >= range.upperBound { break }
            if existing.lowerBound > cursor { result.append(cursor..<existing.lowerBound) }
            cursor = max(cursor, existing.upperBound)
            if cursor >= range.upperBound { break }
        }
        if cursor < range.upperBound { result.append(cursor..<range.upperBound) }
        return result
    }
}
