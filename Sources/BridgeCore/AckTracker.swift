import KubeModel

/// Orders acknowledgements per watch scope. Changes are registered in arrival order; each must be
/// acknowledged by every sink. The watermark of a scope is the resourceVersion of the newest watch
/// event or progress whose predecessors are all acknowledged too: a checkpoint there loses nothing,
/// because everything before it has been confirmed everywhere. States a list found (`synced`) do
/// not move it, since a list is not in version order; its end does. Progress (bookmarks, finished
/// lists) enters already acknowledged, so quiet resources' checkpoints move too.
///
/// A value: the caller serializes access (the pipeline keeps it in a lock), and the tests drive it
/// step by step.
public struct AckTracker: Sendable {
    /// Identifies one registered change.
    public struct Token: Hashable, Sendable {
        public var scope: WatchScope
        public var sequence: UInt64
    }

    /// What a watermark's advance retired, for the checkpoint: the new watermark and the changes
    /// now confirmed everywhere, in order (the known-objects index is updated from them).
    public struct Advance: Sendable {
        public var scope: WatchScope
        public var resourceVersion: String
        public var confirmed: [ConfirmedChange]
        /// When the newest change or progress now covered was registered: the checkpoint's age
        /// counts from it.
        public var coveredUntil: ContinuousClock.Instant
    }

    /// The identity a confirmed change leaves in the known-objects index.
    public struct ConfirmedChange: Sendable, Equatable {
        public var type: ChangeType
        public var apiVersion: String
        public var kind: String
        public var uid: String
        public var namespace: String?
        public var name: String
        public var resourceVersion: String
        public var generation: Int64?
    }

    struct Entry {
        var sequence: UInt64
        /// Where a watch can resume once this entry is confirmed; nil for a state a list found,
        /// whose version says nothing about the watch's position (see `register`).
        var resourceVersion: String?
        var registeredAt: ContinuousClock.Instant
        /// Bit i set: sink i has not acknowledged yet.
        var pending: UInt64
        var change: ConfirmedChange?
    }

    struct ScopeState {
        var entries: [Entry] = []
        var head = 0
        var nextSequence: UInt64 = 0
        var watermark: String?
    }

    public let sinkCount: Int
    /// States in an array, found by slot: changed in place through the array's subscript, which
    /// (unlike a dictionary's) never copies a state's entries on the way.
    private var slots: [WatchScope: Int] = [:]
    private var states: [ScopeState] = []

    private mutating func slot(_ scope: WatchScope) -> Int {
        if let slot = slots[scope] { return slot }
        states.append(ScopeState())
        slots[scope] = states.count - 1
        return states.count - 1
    }

    public init(sinkCount: Int) {
        precondition(sinkCount >= 1 && sinkCount <= 64, "between 1 and 64 sinks")
        self.sinkCount = sinkCount
    }

    var allPending: UInt64 { sinkCount == 64 ? .max : (1 << UInt64(sinkCount)) - 1 }

    /// Registers an event in arrival order. A change gets a token to acknowledge; progress is
    /// acknowledged already and returns the advance it may cause.
    public mutating func register(_ event: ResourceEvent, at now: ContinuousClock.Instant = .now) -> (token: Token?, advance: Advance?) {
        let pending = allPending
        let slot = slot(event.scope)
        let sequence = states[slot].nextSequence
        states[slot].nextSequence += 1
        switch event {
        case .change(let change):
            let meta = change.metadata
            // A list returns objects in name order, each at its own version: resuming a watch from
            // one of them would replay older changes of objects already sent at newer versions.
            // Until the list's own version arrives (as progress), the watermark stays where it was.
            states[slot].entries.append(Entry(
                sequence: sequence, resourceVersion: change.type == .synced ? nil : meta.resourceVersion, registeredAt: now, pending: pending,
                change: ConfirmedChange(type: change.type, apiVersion: meta.apiVersion, kind: meta.kind, uid: meta.uid,
                                        namespace: meta.namespace, name: meta.name,
                                        resourceVersion: meta.resourceVersion, generation: meta.generation)))
            return (Token(scope: event.scope, sequence: sequence), nil)
        case .progress(_, let resourceVersion):
            states[slot].entries.append(Entry(sequence: sequence, resourceVersion: resourceVersion, registeredAt: now, pending: 0, change: nil))
            return (nil, Self.retire(event.scope, &states[slot]))
        }
    }

    /// Sink `sink` confirmed the change; returns the advance of the watermark, if any.
    public mutating func acknowledge(_ token: Token, sink: Int) -> Advance? {
        guard let slot = slots[token.scope] else { return nil }
        let head = states[slot].head
        guard head < states[slot].entries.count else { return nil }
        let first = states[slot].entries[head].sequence
        guard token.sequence >= first else { return nil }
        let index = head + Int(token.sequence - first)
        guard index < states[slot].entries.count else { return nil }
        states[slot].entries[index].pending &= ~(1 << UInt64(sink))
        return index == head ? Self.retire(token.scope, &states[slot]) : nil
    }

    private static func retire(_ scope: WatchScope, _ state: inout ScopeState) -> Advance? {
        var confirmed: [ConfirmedChange] = []
        var newest: ContinuousClock.Instant?
        while state.head < state.entries.count, state.entries[state.head].pending == 0 {
            let entry = state.entries[state.head]
            if let change = entry.change { confirmed.append(change) }
            if let resourceVersion = entry.resourceVersion { state.watermark = resourceVersion }
            newest = entry.registeredAt
            state.head += 1
        }
        if state.head == state.entries.count {
            // All confirmed: a list's burst leaves no capacity behind.
            state.entries = []
            state.head = 0
        } else if state.head > 1024, state.head * 2 > state.entries.count {
            state.entries.removeFirst(state.head)
            state.head = 0
        }
        guard let newest else { return nil }
        // No watermark yet (a first list in progress): "" saves the objects with no position, so a
        // restart lists again.
        return Advance(scope: scope, resourceVersion: state.watermark ?? "", confirmed: confirmed, coveredUntil: newest)
    }

    public func watermark(of scope: WatchScope) -> String? {
        slots[scope].flatMap { states[$0].watermark }
    }

    /// Changes registered and not yet confirmed everywhere, per scope.
    public func unconfirmed(in scope: WatchScope) -> Int {
        guard let slot = slots[scope] else { return 0 }
        let state = states[slot]
        return state.entries[state.head...].filter { $0.pending != 0 }.count
    }
}

extension KnownObjects {
    /// Records a change confirmed by every sink.
    public mutating func apply(_ change: AckTracker.ConfirmedChange) {
        if change.type == .deleted {
            remove(uid: change.uid)
            return
        }
        set(uid: change.uid, Entry(namespace: change.namespace, name: change.name, resourceVersion: change.resourceVersion, generation: change.generation,
                                   stored: true))
        if apiVersion.isEmpty { apiVersion = change.apiVersion }
        if kind.isEmpty { kind = change.kind }
    }
}
