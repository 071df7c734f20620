import Logging

/// Gives objects their checkpoint rows before any sink sees them (`Change.unrecorded`), many in
/// one transaction: each gets a sequence number, and a pipeline waits until the numbers of its
/// batch are durable before it delivers the batch. Writing starts as soon as an object arrives,
/// so it overlaps the delivery of earlier batches; while one write runs, the next objects gather,
/// so a busy bridge pays one store write per round, not per object.
public actor ObjectRecorder {
    let store: any CheckpointStore
    let logger: Logger
    let retry: Backoff
    private var pending: [UnrecordedObject] = []
    private var nextSequence: UInt64 = 1
    private var durableSequence: UInt64 = 0
    private var writing = false
    private var waiters: [(sequence: UInt64, continuation: CheckedContinuation<Void, Never>)] = []

    public init(store: any CheckpointStore, logger: Logger, retry: Backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(10))) {
        self.store = store
        self.logger = logger
        self.retry = retry
    }

    /// Queues the object's row and starts writing; returns the number to wait for.
    public func add(_ object: UnrecordedObject) -> UInt64 {
        pending.append(object)
        if !writing {
            writing = true
            Task { await self.write() }
        }
        defer { nextSequence += 1 }
        return nextSequence
    }

    /// Returns once the rows up to `sequence` are in the store. A failing store is retried: until
    /// it works, nothing more reaches the sinks.
    public func waitUntilRecorded(through sequence: UInt64) async {
        guard sequence > durableSequence else { return }
        await withCheckedContinuation { continuation in
            waiters.append((sequence, continuation))
        }
    }

    private func write() async {
        var random = SystemRandomNumberGenerator()
        var failures = 0
        while !pending.isEmpty {
            let batch = pending
            let last = nextSequence - 1
            pending = []
            do {
                try await store.record(batch)
                failures = 0
                durableSequence = last
                let ready = waiters.filter { $0.sequence <= last }
                waiters.removeAll { $0.sequence <= last }
                for waiter in ready { waiter.continuation.resume() }
            } catch {
                pending = batch + pending
                failures += 1
                logger.error("recording \(batch.count) objects in the checkpoint store failed: \(error); nothing more is delivered until it works")
                try? await Task.sleep(for: retry.delay(attempt: failures, using: &random))
            }
        }
        writing = false
    }
}
