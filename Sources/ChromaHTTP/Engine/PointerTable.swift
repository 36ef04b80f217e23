/// Values by a C object's address (a loop's HTTP connections by their `evhttp_connection`,
/// looked up once per request). Open addressing with linear probing and a multiplicative hash: a lookup is
/// a multiply, a shift and usually one compare, where `Dictionary` spends ~230
/// instructions hashing a pointer with SipHash (callgrind). Loop thread only.
struct PointerTable<Value> {
    /// 0 marks an empty slot (no object lives at address 0).
    private var keys: [UInt]
    private var values: [Value?]
    private(set) var count = 0
    private var shift: Int

    init() {
        keys = [UInt](repeating: 0, count: 64)
        values = [Value?](repeating: nil, count: 64)
        shift = UInt.bitWidth - 6
    }

    private var mask: Int { keys.count - 1 }

    /// Fibonacci hashing: the high bits of key × 2⁶⁴/φ, spread even for aligned addresses.
    @inline(__always) private func home(_ key: UInt) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> UInt(shift))
    }

    subscript(_ key: UnsafeMutableRawPointer) -> Value? {
        let k = UInt(bitPattern: key)
        var slot = home(k)
        while keys[slot] != 0 {
            if keys[slot] == k { return values[slot] }
            slot = (slot + 1) & mask
        }
        return nil
    }

    mutating func insert(_ value: Value, for key: UnsafeMutableRawPointer) {
        if (count + 1) * 4 > keys.count * 3 { grow() }
        let k = UInt(bitPattern: key)
        var slot = home(k)
        while keys[slot] != 0 && keys[slot] != k { slot = (slot + 1) & mask }
        if keys[slot] == 0 { count += 1 }
        keys[slot] = k
        values[slot] = value
    }

    /// Removes and returns the entry; later entries of its probe run move back into the
    /// hole (no tombstones, so lookups never slow down with churn).
    mutating func remove(_ key: UnsafeMutableRawPointer) -> Value? {
        let k = UInt(bitPattern: key)
        var slot = home(k)
        while keys[slot] != k {
            if keys[slot] == 0 { return nil }
            slot = (slot + 1) & mask
        }
        let removed = values[slot]
        var hole = slot
        var next = (slot + 1) & mask
        while keys[next] != 0 {
            let want = home(keys[next])
            // Move `next` into the hole unless its home lies cyclically in (hole, next].
            let stays = hole <= next ? (hole < want && want <= next) : (hole < want || want <= next)
            if !stays {
                keys[hole] = keys[next]
                values[hole] = values[next]
                hole = next
            }
            next = (next + 1) & mask
        }
        keys[hole] = 0
        values[hole] = nil
        count -= 1
        return removed
    }

    /// Every value, in no particular order.
    var all: [Value] { values.compactMap { $0 } }

    mutating func removeAll() {
        self = PointerTable()
    }

    private mutating func grow() {
        let old = zip(keys, values)
        keys = [UInt](repeating: 0, count: keys.count * 2)
        values = [Value?](repeating: nil, count: keys.count)
        shift -= 1
        count = 0
        for (key, value) in old where key != 0 {
            insert(value!, for: UnsafeMutableRawPointer(bitPattern: key)!)
        }
    }
}
