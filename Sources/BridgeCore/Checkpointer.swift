import CoreMetrics
import Logging

/// Saves the watermarks and the confirmed known objects: at most once per interval (or as soon as
/// enough changes are waiting), and a last time when it stops. Between saves the deltas of a scope
/// are merged, so a busy object costs one row per save, not one per change.
public actor Checkpointer {
    let store: any CheckpointStore
    let interval: Duration
    let maxPendingChanges: Int
    let logger: Logger
    private var pending: [WatchScope: CheckpointDelta] = [:]
    private var pendingChanges = 0
    private var wake: CheckedContinuation<Void, Never>?
    public private(set) var saves = 0
    /// Per scope, when the newest change or progress covered by the pending and the saved
    /// checkpoint was registered.
    private var pendingCoveredUntil: [WatchScope: ContinuousClock.Instant] = [:]
    private var savedCoveredUntil: [WatchScope: ContinuousClock.Instant] = [:]
    private let saveCounter = Counter(label: MetricName.checkpointSaves)

    public init(store: any CheckpointStore, interval: Duration = .seconds(1), maxPendingChanges: Int = 10_000, logger: Logger) {
        self.store = store
        self.interval = interval
        self.maxPendingChanges = maxPendingChanges
        self.logger = logger
    }

    /// Records an advance of a watermark.
    public func record(_ advance: AckTracker.Advance) {
        // Taken out of the dictionary while it changes, so that it is not copied on every record.
        var delta = pending.removeValue(forKey: advance.scope) ?? CheckpointDelta(scope: advance.scope, resourceVersion: advance.resourceVersion)
        delta.resourceVersion = advance.resourceVersion
        for change in advance.confirmed {
            if delta.apiVersion.isEmpty { delta.apiVersion = change.apiVersion }
            if delta.kind.isEmpty { delta.kind = change.kind }
            if change.type == .deleted {
                delta.upserts[change.uid] = nil
                delta.deletions.insert(change.uid)
            } else {
                delta.deletions.remove(change.uid)
                delta.upserts[change.uid] = KnownObjects.Entry(
                    namespace: change.namespace, name: change.name, resourceVersion: change.resourceVersion, generation: change.generation,
                    stored: true)
            }
        }
        pending[advance.scope] = delta
        pendingCoveredUntil[advance.scope] = advance.coveredUntil
        pendingChanges += advance.confirmed.count
        if pendingChanges >= maxPendingChanges, let wake {
            self.wake = nil
            wake.resume()
        }
    }

    /// Saves what is pending now.
    public func flush() async throws {
        guard !pending.isEmpty else { return }
        let deltas = Array(pending.values)
        let covered = pendingCoveredUntil
        pending = [:]
        pendingCoveredUntil = [:]
        pendingChanges = 0
        do {
            try await store.save(deltas)
            saves += 1
            saveCounter.increment()
            savedCoveredUntil.merge(covered) { max($0, $1) }
        } catch {
            pendingCoveredUntil.merge(covered) { max($0, $1) }
            // Put them back, merged under anything recorded meanwhile, and report.
            for delta in deltas {
                if var newer = pending[delta.scope] {
                    var merged = delta
                    merged.resourceVersion = newer.resourceVersion
                    for uid in newer.deletions { merged.upserts[uid] = nil; merged.deletions.insert(uid) }
                    for (uid, entry) in newer.upserts { merged.deletions.remove(uid); merged.upserts[uid] = entry }
                    if merged.apiVersion.isEmpty { merged.apiVersion = newer.apiVersion }
                    if merged.kind.isEmpty { merged.kind = newer.kind }
                    newer = merged
                    pending[delta.scope] = newer
                } else {
                    pending[delta.scope] = delta
                }
            }
            throw error
        }
    }

    /// How old each scope's saved checkpoint is: the time since the newest change or progress it
    /// covers was received. A scope with nothing saved yet is left out.
    public func ages(at now: ContinuousClock.Instant = .now) -> [WatchScope: Duration] {
        savedCoveredUntil.mapValues { $0.duration(to: now) }
    }

    /// Saves periodically until cancelled, then once more.
    public func run() async {
        while !Task.isCancelled {
            await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    wake = continuation
                    Task { [interval] in
                        try? await Task.sleep(for: interval)
                        self.wakeUp()
                    }
                }
            } onCancel: {
                Task { await self.wakeUp() }
            }
            do {
                try await flushUncancelled()
            } catch {
                logger.error("saving the checkpoint failed: \(error); it is kept in memory and tried again")
            }
        }
        do {
            try await flushUncancelled()
        } catch {
            logger.error("saving the last checkpoint failed: \(error); the next start resumes from the previous one")
        }
    }

    /// A save in a task of its own, which the shutdown's cancellation does not reach: a store that
    /// talks to the API server would give its write up half done, and the write that landed anyway
    /// would make the next one look like another replica's (a conflict, and a stop with exit code 4).
    private func flushUncancelled() async throws {
        try await Task { try await flush() }.value
    }

    private func wakeUp() {
        if let wake {
            self.wake = nil
            wake.resume()
        }
    }
}
