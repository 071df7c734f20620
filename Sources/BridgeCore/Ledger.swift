import CoreMetrics
import KubeModel
import Logging
import NIOCore
import Synchronization

/// Does what a `DeliveryLedger` decides, against a checkpoint store: writes the rows of new
/// objects (one write in flight; pipelines wait for their batch's rows with
/// `waitUntilRecorded`), saves the checkpoint when the ledger says (on its interval, early under
/// load, and a last time when `run` ends), and reports each outcome back. Store calls run in tasks
/// of their own, which a shutdown's cancellation does not reach: a store that talks to the API
/// server would give its write up half done, and the write that landed anyway would make the next
/// one look like another replica's (a conflict, and a stop with exit code 4).
public final class Ledger: Sendable {
    let store: any CheckpointStore
    let logger: Logger
    let retry: Backoff
    /// The ledger's clock; the bridge and its pipelines stamp and measure with it too.
    public let timekeeper: Timekeeper
    private let saveCounter = Counter(label: MetricName.checkpointSaves)

    private struct State {
        var ledger: DeliveryLedger
        var waiters: [(recording: UInt64, continuation: CheckedContinuation<Void, Never>)] = []
        var recordFailures = 0
        /// The latest save: what the store threw, or nil once it saved.
        var save: Task<(any Error)?, Never>?
        /// Tasks waiting, after saves, for the ledger to be as they need it.
        var saveWaiters: [(id: UInt64, ready: @Sendable (DeliveryLedger) -> Bool, continuation: CheckedContinuation<Void, Never>)] = []
        var nextWaiter: UInt64 = 0
    }

    private let state: Mutex<State>

    public init<C: Clock>(store: any CheckpointStore, sinkCount: Int, saveInterval: Duration = .seconds(1), saveEarlyAt: Int = 10_000,
                          clock: C = ContinuousClock(), logger: Logger,
                          retry: Backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(10))) where C.Duration == Duration {
        self.store = store
        self.logger = logger
        self.retry = retry
        timekeeper = Timekeeper(clock)
        state = Mutex(State(ledger: DeliveryLedger(sinkCount: max(1, sinkCount), saveInterval: saveInterval, saveEarlyAt: saveEarlyAt)))
    }

    /// Whether the store keeps the state last sent of each object (`SentStates`).
    public var keepsSentStates: Bool { store is any SentStates }

    /// An informer's event, in arrival order per scope, arrived `now` (on `timekeeper`; read here
    /// when not given). `sentState` is the object as sent, when sent states are kept.
    public func received(_ event: ResourceEvent, at now: Duration? = nil, sentState: ByteBuffer? = nil) -> DeliveryLedger.Receipt {
        let now = now ?? timekeeper.now()
        let receipt = state.withLock { $0.ledger.received(event, at: now, state: sentState) }
        perform(receipt.actions)
        return receipt
    }

    /// Sinks confirmed these changes (or will never see them).
    public func acknowledged(_ tokens: some Sequence<DeliveryLedger.Token>, sink: Int) {
        perform(state.withLock { state in tokens.flatMap { state.ledger.acknowledged($0, sink: sink) } })
    }

    /// Returns once the rows through `recording` are in the store. A failing store is retried:
    /// until it works, nothing more reaches the sinks.
    public func waitUntilRecorded(through recording: UInt64) async {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state in
                guard recording > state.ledger.durableRecording else { return true }
                state.waiters.append((recording, continuation))
                return false
            }
            if ready { continuation.resume() }
        }
    }

    /// The state last sent of an object: the ledger's when it is newer than the saved checkpoint,
    /// else the store's; nil when there is none (never sent, deleted, or a store that keeps none).
    public func sentState(of uid: String, in scope: WatchScope) throws -> ByteBuffer? {
        switch state.withLock({ $0.ledger.sentState(of: uid, in: scope) }) {
        case .unsaved(let sent): return sent
        case .deleted: return nil
        case .saved: return try (store as? any SentStates)?.sentState(of: uid, in: scope)
        }
    }

    public func watermark(of scope: WatchScope) -> String? {
        state.withLock { $0.ledger.watermark(of: scope) }
    }

    public func unconfirmed(in scope: WatchScope) -> Int {
        state.withLock { $0.ledger.unconfirmed(in: scope) }
    }

    public var saves: Int { state.withLock { $0.ledger.saves } }

    /// Returns once, after a save, `ready` holds of the ledger (or at once when it holds now), or
    /// the task is cancelled.
    public func waitAfterSaves(until ready: @escaping @Sendable (DeliveryLedger) -> Bool) async {
        let id = state.withLock { state in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let ready = state.withLock { state in
                    guard !ready(state.ledger), !Task.isCancelled else { return true }
                    state.saveWaiters.append((id, ready, continuation))
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                guard let index = state.saveWaiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.saveWaiters.remove(at: index).continuation
            }
            waiter?.resume()
        }
    }
    public var sinkCount: Int { state.withLock { $0.ledger.sinkCount } }
    /// A save is in flight.
    public var isSaving: Bool { state.withLock { $0.ledger.isSaving } }
    /// States sent and not yet saved are held (see `DeliveryLedger.holdsUnsavedStates`).
    public var holdsUnsavedStates: Bool { state.withLock { $0.ledger.holdsUnsavedStates } }

    /// How old each scope's saved checkpoint is: the time since the newest change or progress it
    /// covers arrived. A scope with nothing saved yet is left out.
    public func ages() -> [WatchScope: Duration] {
        let now = timekeeper.now()
        return state.withLock { $0.ledger.savedCoveredUntil.mapValues { now - $0 } }
    }

    /// Saves on the ledger's interval until cancelled, then waits for the save in flight and saves
    /// what is left, last of all.
    public func run() async {
        let interval = state.withLock { $0.ledger.saveInterval }
        while !Task.isCancelled {
            try? await timekeeper.sleep(interval)
            let now = timekeeper.now()
            perform(state.withLock { $0.ledger.tick(at: now) })
        }
        do {
            try await flush()
        } catch {
            logger.error("saving the last checkpoint failed: \(error); the next start resumes from the previous one")
        }
    }

    /// Saves what is gathered now, after the save in flight, and returns once it is saved (or
    /// throws what the store threw).
    public func flush() async throws {
        _ = await latestSave()
        perform(state.withLock { $0.ledger.finalSave() })
        if let error = await latestSave() { throw error }
    }

    /// The outcome of the latest save, once it and any save it started are done.
    private func latestSave() async -> (any Error)? {
        var outcome: (any Error)?
        while let save = state.withLock({ $0.save }) {
            outcome = await save.value
            if state.withLock({ $0.save == save }) { break }
        }
        return outcome
    }

    private func perform(_ actions: [DeliveryLedger.Action]) {
        for action in actions {
            switch action {
            case .release(let through):
                let ready = state.withLock { state in
                    let ready = state.waiters.filter { $0.recording <= through }
                    state.waiters.removeAll { $0.recording <= through }
                    return ready
                }
                for waiter in ready { waiter.continuation.resume() }
            case .record(let rows):
                Task { await self.write(rows) }
            case .save(let deltas):
                state.withLock { $0.save = Task { await self.save(deltas) } }
            }
        }
    }

    private func write(_ rows: [UnrecordedObject]) async {
        do {
            try await store.record(rows)
            perform(state.withLock { state in
                state.recordFailures = 0
                return state.ledger.recorded()
            })
        } catch {
            let failures = state.withLock { state in
                state.ledger.recordFailed()
                state.recordFailures += 1
                return state.recordFailures
            }
            logger.error("recording \(rows.count) objects in the checkpoint store failed: \(error); nothing more is delivered until it works")
            var random = SystemRandomNumberGenerator()
            try? await timekeeper.sleep(retry.delay(attempt: failures, using: &random))
            perform(state.withLock { $0.ledger.retryRecording() })
        }
    }

    private func save(_ deltas: [CheckpointDelta]) async -> (any Error)? {
        do {
            try await store.save(deltas)
            saveCounter.increment()
            let (actions, reached) = state.withLock { state in
                let actions = state.ledger.saveSucceeded()
                let ledger = state.ledger
                let reached = state.saveWaiters.filter { $0.ready(ledger) }
                state.saveWaiters.removeAll { $0.ready(ledger) }
                return (actions, reached)
            }
            for waiter in reached { waiter.continuation.resume() }
            perform(actions)
            return nil
        } catch {
            state.withLock { $0.ledger.saveFailed() }
            logger.error("saving the checkpoint failed: \(error); it is kept in memory and tried again")
            return error
        }
    }
}
