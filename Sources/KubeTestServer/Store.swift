import Foundation

/// An object as stored: its canonical JSON (the home representation of its storage) and that JSON serialized.
struct StoredObject {
    var value: JSON
    var bytes: [UInt8]
    /// The etcd key suffix, `/namespace/name` or `/name`: lists are sorted by it and continue tokens point into it.
    var key: String
    var namespace: String?
    var name: String
    var uid: String
    var resourceVersion: Int64
    var labels: [String: String]

    init(value: JSON, key: String, namespace: String?, name: String, uid: String, resourceVersion: Int64) {
        self.value = value
        self.bytes = value.serialized()
        self.key = key
        self.namespace = namespace
        self.name = name
        self.uid = uid
        self.resourceVersion = resourceVersion
        var labels: [String: String] = [:]
        for (k, v) in value["metadata"]?["labels"]?.objectMembers ?? [] {
            if let s = v.stringValue { labels[k] = s }
        }
        self.labels = labels
    }

    static func key(namespace: String?, name: String) -> String {
        if let namespace { return "/\(namespace)/\(name)" }
        return "/\(name)"
    }
}

enum WatchEventType: String {
    case added = "ADDED"
    case modified = "MODIFIED"
    case deleted = "DELETED"
}

struct LogEntry {
    var type: WatchEventType
    var revision: Int64
    /// The new state; for a deletion, the last state carrying the deletion's resourceVersion.
    var object: StoredObject
    /// The state before this change; nil for an addition.
    var previous: StoredObject?
}

/// The change history of one storage: what the watch cache replays and what consistent paginated
/// lists reconstruct older snapshots from. Sequence numbers are absolute so that watch cursors stay
/// valid while old entries are trimmed.
struct EventLog {
    private(set) var entries: [LogEntry] = []
    private var head = 0
    /// The sequence number of `entries[head]`.
    private(set) var firstSequence = 0
    /// Every change after this revision is in the log.
    private(set) var floorRevision: Int64 = 0

    var endSequence: Int { firstSequence + (entries.count - head) }
    var count: Int { entries.count - head }
    var oldestRevision: Int64? { head < entries.count ? entries[head].revision : nil }

    mutating func append(_ entry: LogEntry) {
        entries.append(entry)
    }

    func entry(at sequence: Int) -> LogEntry {
        entries[head + (sequence - firstSequence)]
    }

    /// The sequence of the first entry newer than `revision`.
    func firstSequence(after revision: Int64) -> Int {
        var low = head
        var high = entries.count
        while low < high {
            let mid = (low + high) / 2
            if entries[mid].revision <= revision { low = mid + 1 } else { high = mid }
        }
        return firstSequence + (low - head)
    }

    /// Drops entries up to and including `revision`, but never those at or after `keepFrom` (a watcher's cursor).
    mutating func trim(through revision: Int64, keepFrom: Int) {
        while head < entries.count, entries[head].revision <= revision, firstSequence < keepFrom {
            floorRevision = entries[head].revision
            head += 1
            firstSequence += 1
        }
        if head > 1024, head * 2 > entries.count {
            entries.removeFirst(head)
            head = 0
        }
    }

    mutating func raiseFloor(to revision: Int64) {
        if revision > floorRevision, head >= entries.count || entries[head].revision > revision {
            floorRevision = revision
        }
    }

    /// Entries newer than `revision`, newest first.
    func newer(than revision: Int64) -> [LogEntry] {
        var out: [LogEntry] = []
        var index = entries.count - 1
        while index >= head, entries[index].revision > revision {
            out.append(entries[index])
            index -= 1
        }
        return out
    }
}

/// The objects of one storage (one etcd prefix), shared by every group version that serves it.
final class ResourceStore {
    let storage: String
    var objects: [String: StoredObject] = [:]
    /// Keys in etcd order.
    private(set) var sortedKeys: [String] = []
    var log = EventLog()
    var watchers: [ObjectIdentifier: WatchSession] = [:]
    /// Served only while its CRD exists.
    var isRemoved = false

    init(storage: String) {
        self.storage = storage
    }

    func insertKey(_ key: String) {
        let index = lowerBound(key)
        if index < sortedKeys.count, sortedKeys[index] == key { return }
        sortedKeys.insert(key, at: index)
    }

    func removeKey(_ key: String) {
        let index = lowerBound(key)
        if index < sortedKeys.count, sortedKeys[index] == key { sortedKeys.remove(at: index) }
    }

    func lowerBound(_ key: String) -> Int {
        var low = 0
        var high = sortedKeys.count
        while low < high {
            let mid = (low + high) / 2
            if sortedKeys[mid] < key { low = mid + 1 } else { high = mid }
        }
        return low
    }

    /// The smallest cursor of an open watch: log entries from there on stay, so that a slow reader
    /// is held back by TCP rather than cut off.
    var oldestWatchCursor: Int {
        watchers.values.map(\.cursor).min() ?? Int.max
    }

    /// The objects as they were at `revision`, in key order, starting after `startKey`.
    func snapshot(at revision: Int64, after startKey: String?) -> SnapshotIterator {
        let changes = log.newer(than: revision)
        var overlay: [String: StoredObject?] = [:]
        for entry in changes {
            // Newest first: the oldest change after `revision` wins, restoring the state before it.
            overlay[entry.object.key] = .some(entry.previous)
        }
        return SnapshotIterator(store: self, overlay: overlay, startKey: startKey)
    }
}

/// Walks a snapshot in key order: the current keys, merged with those the log restores. Without
/// changes since the snapshot, it walks the current keys in place (a page of a large list must not
/// cost a copy of every key).
struct SnapshotIterator: Sequence, IteratorProtocol {
    let store: ResourceStore
    let overlay: [String: StoredObject?]
    private var merged: [String]?
    private var index: Int

    init(store: ResourceStore, overlay: [String: StoredObject?], startKey: String?) {
        self.store = store
        self.overlay = overlay
        if overlay.isEmpty {
            merged = nil
            index = startKey.map { store.lowerBound($0) } ?? 0
        } else {
            var keys = Set(store.sortedKeys[(startKey.map { store.lowerBound($0) } ?? 0)...])
            for key in overlay.keys where startKey == nil || key >= startKey! { keys.insert(key) }
            merged = keys.sorted()
            index = 0
        }
    }

    mutating func next() -> StoredObject? {
        while true {
            let key: String
            if let merged {
                guard index < merged.count else { return nil }
                key = merged[index]
            } else {
                guard index < store.sortedKeys.count else { return nil }
                key = store.sortedKeys[index]
            }
            index += 1
            if let restored = overlay[key] {
                if let restored { return restored }
                continue
            }
            if let object = store.objects[key] { return object }
        }
    }
}

// MARK: - Selectors

/// A label selector in the string form of the API (`a=b,c!=d,e in (f,g),!h`).
struct LabelSelector {
    enum Requirement {
        case equals(String, String)
        case notEquals(String, String)
        case inSet(String, Set<String>)
        case notInSet(String, Set<String>)
        case exists(String)
        case notExists(String)
    }

    var requirements: [Requirement] = []

    init(parsing text: String) throws {
        var rest = Substring(text)
        while !rest.isEmpty {
            rest = rest.drop(while: { $0 == " " })
            // Split at the next comma outside parentheses.
            var depth = 0
            var end = rest.endIndex
            for index in rest.indices {
                if rest[index] == "(" { depth += 1 }
                if rest[index] == ")" { depth -= 1 }
                if rest[index] == ",", depth == 0 { end = index; break }
            }
            let term = rest[rest.startIndex..<end].trimmingSpaces()
            rest = end < rest.endIndex ? rest[rest.index(after: end)...] : ""
            if term.isEmpty { continue }
            requirements.append(try LabelSelector.parseTerm(Substring(term)))
        }
    }

    static func parseTerm(_ term: Substring) throws -> Requirement {
        if term.hasPrefix("!") { return .notExists(String(term.dropFirst()).trimmingSpaces()) }
        if let range = term.range(of: "!=") {
            return .notEquals(String(term[..<range.lowerBound]).trimmingSpaces(), String(term[range.upperBound...]).trimmingSpaces())
        }
        if let range = term.range(of: "==") ?? term.range(of: "=") {
            return .equals(String(term[..<range.lowerBound]).trimmingSpaces(), String(term[range.upperBound...]).trimmingSpaces())
        }
        for (op, negated) in [(" notin ", true), (" in ", false)] {
            if let range = term.range(of: op) {
                let key = String(term[..<range.lowerBound]).trimmingSpaces()
                var values = term[range.upperBound...].trimmingSpaces()
                guard values.hasPrefix("("), values.hasSuffix(")") else { throw SelectorError(text: String(term)) }
                values = String(values.dropFirst().dropLast())
                let set = Set(values.split(separator: ",").map { String($0).trimmingSpaces() })
                return negated ? .notInSet(key, set) : .inSet(key, set)
            }
        }
        let key = String(term).trimmingSpaces()
        guard !key.isEmpty, !key.contains(" ") else { throw SelectorError(text: String(term)) }
        return .exists(key)
    }

    func matches(_ labels: [String: String]) -> Bool {
        requirements.allSatisfy { requirement in
            switch requirement {
            case .equals(let k, let v): return labels[k] == v
            case .notEquals(let k, let v): return labels[k] != v
            case .inSet(let k, let set): return labels[k].map(set.contains) ?? false
            case .notInSet(let k, let set): return labels[k].map { !set.contains($0) } ?? true
            case .exists(let k): return labels[k] != nil
            case .notExists(let k): return labels[k] == nil
            }
        }
    }
}

struct SelectorError: Error {
    var text: String
}

/// A field selector; the test server knows the two fields every resource supports.
struct FieldSelector {
    var requirements: [(field: String, value: String, equal: Bool)] = []

    init(parsing text: String) throws {
        for term in text.split(separator: ",") {
            let term = String(term).trimmingSpaces()
            if term.isEmpty { continue }
            let equal: Bool
            let parts: [Substring]
            if term.contains("!=") {
                equal = false
                parts = term.split(separator: "!", maxSplits: 1)
                let value = parts[1].dropFirst()
                requirements.append((String(parts[0]), String(value), equal))
                continue
            }
            equal = true
            let normalized = term.replacingOccurrences(of: "==", with: "=")
            parts = normalized.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw SelectorError(text: term) }
            requirements.append((String(parts[0]), String(parts[1]), equal))
        }
        for requirement in requirements where !["metadata.name", "metadata.namespace"].contains(requirement.field) {
            throw SelectorError(text: requirement.field)
        }
    }

    func matches(_ object: StoredObject) -> Bool {
        requirements.allSatisfy { requirement in
            let actual = requirement.field == "metadata.name" ? object.name : (object.namespace ?? "")
            return (actual == requirement.value) == requirement.equal
        }
    }
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        String(self.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
