import CoreMetrics
import KubeModel
import Synchronization

/// Counters made once per key: creating one goes through the metrics backend's registry, too
/// slow for every change, and so would be building its label strings.
final class CounterCache<Key: Hashable & Sendable>: Sendable {
    let label: String
    private let counters = Mutex<[Key: Counter]>([:])

    init(_ label: String) {
        self.label = label
    }

    /// `dimensions` is called only the first time a key is seen.
    func increment(_ key: Key, by amount: Int = 1, dimensions: (Key) -> [(String, String)]) {
        let counter = counters.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = Counter(label: label, dimensions: dimensions(key))
            counters[key] = counter
            return counter
        }
        counter.increment(by: amount)
    }
}
