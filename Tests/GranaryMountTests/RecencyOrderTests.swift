import GranaryStore
import Testing

/// The clean cache's LRU order: what it evicts first, and that it stays
/// small however often the same chunks are read.
@Suite struct RecencyOrderTests {
    /// What `CleanCache.evictLocked` does: take the oldest current pairs.
    func evict(_ n: Int, from order: inout RecencyOrder<String>, current: [String: UInt64]) -> [String] {
        var out: [String] = []
        while out.count < n, let p = order.takeOldest() {
            if current[p.key] == p.tick { out.append(p.key) }
        }
        return out
    }

    @Test func evictsLeastRecentlyUsedFirstAndSkipsStalePairs() {
        var order = RecencyOrder<String>()
        var current: [String: UInt64] = [:]
        for k in ["a", "b", "c", "d"] { current[k] = order.use(k) }
        current["a"] = order.use("a")  // a read again: now the newest
        current["c"] = order.use("c")
        #expect(evict(2, from: &order, current: current) == ["b", "d"])
        current["b"] = nil
        current["d"] = nil
        #expect(evict(5, from: &order, current: current) == ["a", "c"])
        #expect(order.takeOldest() == nil)
    }

    @Test func aKeptKeyGoesBackAsTheNewest() {
        var order = RecencyOrder<String>()
        var current: [String: UInt64] = [:]
        for k in ["a", "b"] { current[k] = order.use(k) }
        let a = order.takeOldest()!
        order.putBack(a)
        current["c"] = order.use("c")
        #expect(evict(3, from: &order, current: current) == ["b", "a", "c"])
    }

    @Test func repeatedUsesStayBoundedAndKeepTheirOrder() {
        var order = RecencyOrder<String>()
        var current: [String: UInt64] = [:]
        let keys = (0..<10).map { "k\($0)" }
        for i in 0..<200_000 {
            let k = keys[(i * 7) % keys.count]
            current[k] = order.use(k)
            order.compact(liveCount: current.count) { t, k in current[k] == t }
            #expect(order.pendingCount <= 2 * keys.count + 1025)
        }
        // The last uses decide the order, whatever compaction dropped.
        let last = keys.sorted { current[$0]! < current[$1]! }
        #expect(evict(keys.count, from: &order, current: current) == last)
    }
}
