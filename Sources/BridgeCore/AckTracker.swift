import KubeModel

/// Orders acknowledgements per watch scope. Changes are registered in arrival order; each must be
/// acknowledged by every sink. The watermark of a scope is the resourceVersion of the newest entry
/// whose predecessors are all acknowledged too: a checkpoint there loses nothing, because
/// everything before it has been confirmed everywhere. Progress (bookmarks, finished lists) enters
/// already acknowledged, so quiet resources' checkpoints move too.
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
        var resourceVersion: String
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
    private var scopes: [WatchScope: ScopeState] = [:]

    public init(sinkCount: Int) {
        precondition(sinkCount >= 1 && sinkCount <= 64, "between 1 and 64 sinks")
        self.sinkCount = sinkCount
    }

    var allPending: UInt64 { sinkCount == 64 ? .max : (1 << UInt64(sinkCount)) - 1 }

    /// Registers an event in arrival order. A change gets a token to acknowledge; progress is
    /// acknowledged already and returns the advance it may cause.
    public mutating func register(_ event: ResourceEvent) -> (token: Token?, advance: Advance?) {
        var state = scopes[event.scope] ?? ScopeState()
        let sequence = state.nextSequence
        state.nextSequence += 1
        switch event {
        case .change(let change):
            let meta = change.metadata
            state.entries.append(Entry(
                sequence: sequence, resourceVersion: meta.resourceVersion, pending: allPending,
                change: ConfirmedChange(type: change.type, apiVersion: meta.apiVersion, kind: meta.kind, uid: meta.uid, namespace: meta.namespace, name: meta.name,
                                        resourceVersion: meta.resourceVersion, generation: meta.generation)))
            scopes[event.scope] = state
            return (Token(scope: event.scope, sequence: sequence), nil)
        case .progress(_, let resourceVersion):
            state.entries.append(Entry(sequence: sequence, resourceVersion: resourceVersion, pending: 0, change: nil))
            scopes[event.scope] = state
            return (nil, retire(event.scope))
        }
    }

    /// Sink `sink` confirmed the change; returns the advance of the watermark, if any.
    public mutating func acknowledge(_ token: Token, sink: Int) -> Advance? {
        guard var state = scopes[token.scope], let first = state.entries[state.head...].first?.sequence,
              token.sequence >= first
        else { return nil }
        let index = state.head + Int(token.sequence - first)
        guard index < state.entries.count else { return nil }
        state.entries[index].pending &= ~(1 << UInt64(sink))
        scopes[token.scope] = state
        return index == state.head ? retire(token.scope) : nil
    }

    /// Retires the acknowledged prefix of a scope.
    private mutating func retire(_ scope: WatchScope) -> Advance? {
        guard var state = scopes[scope] else { return nil }
        var confirmed: [ConfirmedChange] = []
        var newest: String?
        while state.head < state.entries.count, state.entries[state.head].pending == 0 {
            let entry = state.entries[state.head]
            if let change = entry.change { confirmed.append(change) }
            newest = entry.resourceVersion
            state.head += 1
        }
        if state.head > 1024, state.head * 2 > state.entries.count {
            state.entries.removeFirst(state.head)
            state.head = 0
        }
        guard let newest else {
            scopes[scope] = state
            return nil
        }
        state.watermark = newest
        scopes[scope] = state
        return Advance(scope: scope, resourceVersion: newest, confirmed: confirmed)
    }

    public func watermark(of scope: WatchScope) -> String? {
        scopes[scope]?.watermark
    }

    /// Changes registered and not yet confirmed everywhere, per scope.
    public func unconfirmed(in scope: WatchScope) -> Int {
        guard let state = scopes[scope] else { return 0 }
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
        set(uid: change.uid, Entry(namespace: change.namespace, name: change.name, resourceVersion: change.resourceVersion, generation: change.generation))
        if apiVersion.isEmpty { apiVersion = change.apiVersion }
        if kind.isEmpty { kind = change.kind }
    }
}
