import KubeModel
import NIOCore

/// One object at one version, as the delivery core carries it from the change that brought it to
/// the checkpoint that remembers it: the row written before a sink sees a new object, the entry a
/// confirmed change leaves in the known objects, the deletion a relist infers.
public struct ObjectVersion: Sendable, Equatable {
    public var apiVersion: String
    public var kind: String
    public var uid: String
    public var namespace: String?
    public var name: String
    public var resourceVersion: String
    public var generation: Int64?

    public init(apiVersion: String, kind: String, uid: String, namespace: String?, name: String, resourceVersion: String, generation: Int64?) {
        self.apiVersion = apiVersion
        self.kind = kind
        self.uid = uid
        self.namespace = namespace
        self.name = name
        self.resourceVersion = resourceVersion
        self.generation = generation
    }

    public init(_ meta: ObjectMeta) {
        self.init(apiVersion: meta.apiVersion, kind: meta.kind, uid: meta.uid, namespace: meta.namespace, name: meta.name,
                  resourceVersion: meta.resourceVersion, generation: meta.generation)
    }

    /// Its entry in the known objects: `delivered` false for a row written before any sink
    /// confirmed the object.
    public func entry(delivered: Bool = true) -> KnownObjects.Entry {
        KnownObjects.Entry(namespace: namespace, name: name, resourceVersion: resourceVersion, generation: generation, stored: true, delivered: delivered)
    }
}

/// Everything the bridge decides between receiving a change and saving the checkpoint that covers
/// it, as one value: the order of acknowledgements per watch scope (the watermark), the rows new
/// objects get before any sink sees them, and the checkpoint deltas gathered between saves. Its
/// steps return what is to be done (write rows, save deltas, let pipelines deliver); a driver
/// (`Ledger`) does it against the store and reports back. Time comes in as arguments: the ledger
/// never reads a clock.
///
/// The rules, each in one place:
/// - A scope's watermark is the resourceVersion of the newest watch event or progress whose
///   predecessors every sink has acknowledged; a checkpoint there loses nothing.
/// - States a list found (`synced`) and deletions inferred from tombstones never move it: they
///   have no place in the watch's order. The list's end (progress) does.
/// - Progress (bookmarks, finished lists) enters acknowledged, so quiet scopes' checkpoints move.
/// - An object no checkpoint row knows (`Change.unrecorded`) gets its row before the first sink
///   sees it; rows are written in rounds, one write in flight, the next round gathering meanwhile.
/// - Confirmed changes are merged per scope and uid between saves: a busy object costs one row
///   per save. A save goes at most once per interval, or at once when enough changes wait; a
///   failed save's deltas are merged back under what came meanwhile.
public struct DeliveryLedger: Sendable {
    /// Identifies one received change until every sink has acknowledged it.
    public struct Token: Hashable, Sendable {
        public var scope: WatchScope
        public var sequence: UInt64
    }

    /// What the driver is to do.
    public enum Action: Sendable, Equatable {
        /// Write these rows (`CheckpointStore.record`), then report `recorded` or `recordFailed`.
        case record([UnrecordedObject])
        /// Rows through this number are durable: events waiting for them may go to their sinks.
        case release(throughRecording: UInt64)
        /// Save these deltas in one transaction (`CheckpointStore.save`), then report
        /// `saveSucceeded` or `saveFailed`.
        case save([CheckpointDelta])
    }

    /// What receiving a change gave it.
    public struct Receipt: Sendable {
        /// Nil for progress, which needs no acknowledgement.
        public var token: Token?
        /// The row number to wait for before a sink may see the change; 0 when none is needed.
        public var recording: UInt64
        public var actions: [Action]
    }

    struct Entry {
        var sequence: UInt64
        /// Where a watch can resume once this entry is confirmed; nil for a state a list found.
        var resourceVersion: String?
        /// Time of arrival, on the driver's clock.
        var receivedAt: Duration
        /// Bit i set: sink i has not acknowledged yet.
        var pending: UInt64
        var change: (type: ChangeType, object: ObjectVersion)?
        /// The state sent, kept for the checkpoint when sent states are kept.
        var state: ByteBuffer?
    }

    /// The state last sent of an object, as far as the ledger knows it.
    public enum SentState: Sendable, Equatable {
        /// Sent, and not yet in a saved checkpoint.
        case unsaved(ByteBuffer)
        /// Deleted since the last save: there is no previous state.
        case deleted
        /// Nothing newer than the saved checkpoint: ask the store.
        case saved
    }

    struct ScopeState {
        var entries: [Entry] = []
        var head = 0
        var nextSequence: UInt64 = 0
        var watermark: String?
    }

    /// Where the rows of new objects are.
    enum Recording: Equatable, CustomStringConvertible {
        case idle
        /// A write of rows through `through` is in flight.
        case writing(through: UInt64, rows: [UnrecordedObject])
        /// The last write failed; the driver waits, then calls `retryRecording`.
        case failed(rows: [UnrecordedObject], through: UInt64)

        var description: String {
            switch self {
            case .idle: "idle"
            case .writing(let through, _): "writing rows through \(through)"
            case .failed(_, let through): "waiting to write rows through \(through) again"
            }
        }
    }

    public let sinkCount: Int
    /// Save at most this often, unless `saveEarlyAt` changes are waiting.
    public let saveInterval: Duration
    public let saveEarlyAt: Int

    /// Scope states in an array, found by slot: changed in place through the array's subscript,
    /// which (unlike a dictionary's) never copies a state's entries on the way.
    private var slots: [WatchScope: Int] = [:]
    private var states: [ScopeState] = []

    private var recording = Recording.idle
    /// Rows waiting for the next write, and the number the last of them got.
    private var unwritten: [UnrecordedObject] = []
    private var lastRecording: UInt64 = 0
    public private(set) var durableRecording: UInt64 = 0

    /// Deltas gathered since the last save, and the save in flight.
    private var gathered: [WatchScope: CheckpointDelta] = [:]
    private var gatheredChanges = 0
    private var gatheredCoveredUntil: [WatchScope: Duration] = [:]
    private var saving: (deltas: [CheckpointDelta], coveredUntil: [WatchScope: Duration])?
    /// Per scope and uid, the state last sent (nil: deleted) until a save holds it: what the next
    /// change of the object is compared with. Only objects changed since the last save are here.
    private var unsavedStates: [WatchScope: [String: (resourceVersion: String, state: ByteBuffer?)]] = [:]
    /// States were given: deletions are noted too.
    private var keepsStates = false
    private var lastSaveAt: Duration?
    /// Per scope, when the newest change or progress the saved checkpoint covers arrived.
    public private(set) var savedCoveredUntil: [WatchScope: Duration] = [:]
    public private(set) var saves = 0

    public init(sinkCount: Int, saveInterval: Duration = .seconds(1), saveEarlyAt: Int = 10_000) {
        precondition(sinkCount >= 1 && sinkCount <= 64, "between 1 and 64 sinks")
        self.sinkCount = sinkCount
        self.saveInterval = saveInterval
        self.saveEarlyAt = saveEarlyAt
    }

    private var allPending: UInt64 { sinkCount == 64 ? .max : (1 << UInt64(sinkCount)) - 1 }

    private mutating func slot(_ scope: WatchScope) -> Int {
        if let slot = slots[scope] { return slot }
        states.append(ScopeState())
        slots[scope] = states.count - 1
        return states.count - 1
    }

    // MARK: Receiving and acknowledging

    /// An event from an informer, in arrival order per scope. `state` is the object as it was sent
    /// (the event's data), given when sent states are kept: the checkpoint saves it, and until
    /// then `sentState` answers with it.
    public mutating func received(_ event: ResourceEvent, at now: Duration, state: ByteBuffer? = nil) -> Receipt {
        let slot = slot(event.scope)
        let sequence = states[slot].nextSequence
        states[slot].nextSequence += 1
        switch event {
        case .change(let change):
            let object = ObjectVersion(change.metadata)
            // A list returns objects in name order, each at its own version: resuming a watch from
            // one of them would replay older changes of objects already sent at newer versions. A
            // deletion inferred from a tombstone carries the last version known of its object, which
            // may be an early row's, ahead of where the watch was: no position either.
            let position = change.type == .synced || change.finalStateUnknown ? nil : object.resourceVersion
            states[slot].entries.append(Entry(
                sequence: sequence, resourceVersion: position, receivedAt: now,
                pending: allPending, change: (change.type, object), state: change.type == .deleted ? nil : state))
            if state != nil { keepsStates = true }
            if keepsStates, state != nil || change.type == .deleted {
                unsavedStates[change.scope, default: [:]][object.uid] = (object.resourceVersion, change.type == .deleted ? nil : state)
            }
            var receipt = Receipt(token: Token(scope: event.scope, sequence: sequence), recording: 0, actions: [])
            if change.unrecorded {
                unwritten.append(UnrecordedObject(scope: change.scope, object: object))
                lastRecording += 1
                receipt.recording = lastRecording
                receipt.actions = startRecording()
            }
            return receipt
        case .progress(_, let resourceVersion):
            states[slot].entries.append(Entry(sequence: sequence, resourceVersion: resourceVersion, receivedAt: now, pending: 0, change: nil))
            return Receipt(token: nil, recording: 0, actions: retire(slot, scope: event.scope))
        }
    }

    /// Sink `sink` confirmed the change (or will never see it: filtered out, dead-lettered).
    public mutating func acknowledged(_ token: Token, sink: Int) -> [Action] {
        guard let slot = slots[token.scope] else { return [] }
        let head = states[slot].head
        guard head < states[slot].entries.count else { return [] }
        let first = states[slot].entries[head].sequence
        guard token.sequence >= first else { return [] }
        let index = head + Int(token.sequence - first)
        guard index < states[slot].entries.count else { return [] }
        states[slot].entries[index].pending &= ~(1 << UInt64(sink))
        return index == head ? retire(slot, scope: token.scope) : []
    }

    /// Moves the scope's head past what every sink confirmed, into the gathered delta.
    private mutating func retire(_ slot: Int, scope: WatchScope) -> [Action] {
        guard states[slot].head < states[slot].entries.count, states[slot].entries[states[slot].head].pending == 0 else { return [] }
        var newest = Duration.zero
        var confirmed = 0
        // Taken out of the dictionary while it changes, so that it is not copied on every change.
        var delta = gathered.removeValue(forKey: scope) ?? CheckpointDelta(scope: scope, resourceVersion: "")
        while states[slot].head < states[slot].entries.count, states[slot].entries[states[slot].head].pending == 0 {
            let entry = states[slot].entries[states[slot].head]
            if let (type, object) = entry.change {
                confirmed += 1
                if delta.apiVersion.isEmpty { delta.apiVersion = object.apiVersion }
                if delta.kind.isEmpty { delta.kind = object.kind }
                if type == .deleted {
                    delta.upserts[object.uid] = nil
                    delta.states[object.uid] = nil
                    delta.deletions.insert(object.uid)
                } else {
                    delta.deletions.remove(object.uid)
                    delta.upserts[object.uid] = object.entry()
                    delta.states[object.uid] = entry.state
                }
            }
            if let resourceVersion = entry.resourceVersion { states[slot].watermark = resourceVersion }
            newest = entry.receivedAt
            states[slot].head += 1
        }
        if states[slot].head == states[slot].entries.count {
            // All confirmed: a list's burst leaves no capacity behind.
            states[slot].entries = []
            states[slot].head = 0
        } else if states[slot].head > 1024, states[slot].head * 2 > states[slot].entries.count {
            states[slot].entries.removeFirst(states[slot].head)
            states[slot].head = 0
        }
        // No watermark yet (a first list in progress): "" saves the objects with no position, so a
        // restart lists again.
        delta.resourceVersion = states[slot].watermark ?? ""
        gathered[scope] = delta
        gatheredCoveredUntil[scope] = newest
        gatheredChanges += confirmed
        return gatheredChanges >= saveEarlyAt ? startSave() : []
    }

    /// What the ledger knows of the state last sent of an object.
    public func sentState(of uid: String, in scope: WatchScope) -> SentState {
        guard let unsaved = unsavedStates[scope]?[uid] else { return .saved }
        return unsaved.state.map { .unsaved($0) } ?? .deleted
    }

    public func watermark(of scope: WatchScope) -> String? {
        slots[scope].flatMap { states[$0].watermark }
    }

    /// Changes received and not yet confirmed by every sink.
    public func unconfirmed(in scope: WatchScope) -> Int {
        guard let slot = slots[scope] else { return 0 }
        let state = states[slot]
        return state.entries[state.head...].filter { $0.pending != 0 }.count
    }

    // MARK: Rows of new objects

    private mutating func startRecording() -> [Action] {
        guard recording == .idle, !unwritten.isEmpty else { return [] }
        let rows = unwritten
        unwritten = []
        recording = .writing(through: lastRecording, rows: rows)
        return [.record(rows)]
    }

    /// The rows of the last `record` action are durable.
    public mutating func recorded() -> [Action] {
        guard case .writing(let through, _) = recording else { preconditionFailure("recorded() while the rows are \(recording)") }
        durableRecording = through
        recording = .idle
        return [.release(throughRecording: through)] + startRecording()
    }

    /// The last `record` action failed: nothing more is released until it works. The driver
    /// waits (with backoff), then calls `retryRecording`.
    public mutating func recordFailed() {
        guard case .writing(let through, let rows) = recording else { preconditionFailure("recordFailed() while the rows are \(recording)") }
        recording = .failed(rows: rows, through: through)
    }

    /// Writes the failed rows again, with those that came meanwhile.
    public mutating func retryRecording() -> [Action] {
        guard case .failed(let rows, _) = recording else { preconditionFailure("retryRecording() while the rows are \(recording)") }
        unwritten = rows + unwritten
        recording = .idle
        return startRecording()
    }

    // MARK: Saving checkpoints

    private mutating func startSave() -> [Action] {
        guard saving == nil, !gathered.isEmpty else { return [] }
        let deltas = Array(gathered.values)
        saving = (deltas, gatheredCoveredUntil)
        gathered = [:]
        gatheredCoveredUntil = [:]
        gatheredChanges = 0
        return [.save(deltas)]
    }

    /// The time is `now`: a save is due once the interval has passed since the last one.
    public mutating func tick(at now: Duration) -> [Action] {
        guard saving == nil, !gathered.isEmpty else { return [] }
        if let lastSaveAt, lastSaveAt + saveInterval > now, gatheredChanges < saveEarlyAt { return [] }
        lastSaveAt = now
        return startSave()
    }

    /// The save in flight is durable.
    public mutating func saveSucceeded() -> [Action] {
        guard let saving else { preconditionFailure("saveSucceeded() while no save is in flight") }
        self.saving = nil
        saves += 1
        savedCoveredUntil.merge(saving.coveredUntil) { max($0, $1) }
        // What the store now holds needs no copy here; a newer state received meanwhile stays.
        for delta in saving.deltas where unsavedStates[delta.scope] != nil {
            for (uid, entry) in delta.upserts where delta.states[uid] != nil && unsavedStates[delta.scope]?[uid]?.resourceVersion == entry.resourceVersion {
                unsavedStates[delta.scope]?[uid] = nil
            }
            for uid in delta.deletions where unsavedStates[delta.scope]?[uid].map({ $0.state == nil }) == true {
                unsavedStates[delta.scope]?[uid] = nil
            }
            if unsavedStates[delta.scope]?.isEmpty == true { unsavedStates[delta.scope] = nil }
        }
        return gatheredChanges >= saveEarlyAt ? startSave() : []
    }

    /// The save in flight failed: its deltas go back under what was gathered meanwhile, for the
    /// next save.
    public mutating func saveFailed() {
        guard let saving else { preconditionFailure("saveFailed() while no save is in flight") }
        self.saving = nil
        gatheredCoveredUntil.merge(saving.coveredUntil) { max($0, $1) }
        for older in saving.deltas {
            guard let newer = gathered[older.scope] else {
                gathered[older.scope] = older
                continue
            }
            var merged = older
            merged.resourceVersion = newer.resourceVersion
            for uid in newer.deletions { merged.upserts[uid] = nil; merged.states[uid] = nil; merged.deletions.insert(uid) }
            for (uid, entry) in newer.upserts { merged.deletions.remove(uid); merged.upserts[uid] = entry; merged.states[uid] = newer.states[uid] }
            if merged.apiVersion.isEmpty { merged.apiVersion = newer.apiVersion }
            if merged.kind.isEmpty { merged.kind = newer.kind }
            gathered[older.scope] = merged
        }
    }

    /// The last save at shutdown: everything gathered, whatever the interval.
    public mutating func finalSave() -> [Action] {
        startSave()
    }

    /// A save is in flight.
    public var isSaving: Bool { saving != nil }

    /// States sent and not yet saved are held, or being saved.
    public var holdsUnsavedStates: Bool { saving != nil || !unsavedStates.isEmpty }
}

extension UnrecordedObject {
    public init(scope: WatchScope, object: ObjectVersion) {
        self.init(scope: scope, apiVersion: object.apiVersion, kind: object.kind, uid: object.uid, entry: object.entry(delivered: false))
    }
}
