import CoreMetrics
import KubeModel
import Logging
import Synchronization

/// A sink reported that it cannot go on. kubebridge stops (the checkpoint stays before the first
/// event this sink did not confirm) so that its supervisor starts it again with a fresh sink.
public struct SinkStopped: Error, CustomStringConvertible {
    public var sink: String
    public var reason: String
    public var description: String {
        "sink \(sink) cannot go on: \(reason); kubebridge stops, and resumes from its checkpoint when started again"
    }
}

/// The path to one sink: a bounded buffer, batches, retries, dead letters, acknowledgements.
public final class Pipeline: Sendable {
    public struct Options: Sendable {
        public var maxBufferedEvents = 4096
        public var maxBufferedBytes = 32 * 1024 * 1024
        public var batchSize = 500
        public var batchBytes = 4 * 1024 * 1024
        /// How long a batch may wait to fill up once its first event is there.
        public var linger: Duration = .milliseconds(5)
        /// Batches sent to the sink before the first of them is confirmed, for sinks whose
        /// destination takes batches while it confirms earlier ones (see `Sink.send`).
        public var batchesInFlight = 1
        public var retry = Backoff(initial: .milliseconds(200), maximum: .seconds(30))
        /// The events this sink takes; the others count as acknowledged by it.
        public var filter = EventFilter()

        public init() {}
    }

    public enum Status: Sendable, Equatable {
        case running
        /// A fatal sink error: nothing more is delivered, and the checkpoint stays behind.
        case stopped(String)
    }

    public let sink: any Sink
    /// The sink's index in the `DeliveryLedger`.
    public let index: Int
    let options: Options
    /// `options.filter`, or nil when it lets everything through (decided once, not per event).
    let filter: EventFilter?
    let buffer: BoundedBuffer<OutboundEvent>
    let deadLetters: (any DeadLetters)?
    let acknowledge: @Sendable ([DeliveryLedger.Token], Int) async -> Void
    let beforeDelivery: @Sendable ([OutboundEvent]) async -> Void
    let logger: Logger
    let timekeeper: Timekeeper
    /// Rung when a batch in flight has its outcomes and when events arrive in an empty buffer:
    /// with batches in flight, `run` waits for whichever comes first.
    private let doorbell: AsyncStream<Void>
    private let ring: AsyncStream<Void>.Continuation

    /// A batch handed to the sink, its outcomes once they are in.
    private struct InFlight: Sendable {
        final class Arrival: Sendable {
            let arrived = Atomic(false)
        }

        let batch: [OutboundEvent]
        let outcomes: Task<[DeliveryOutcome], Never>
        private let arrival: Arrival

        init(_ batch: [OutboundEvent], _ pending: PendingDelivery, ring: AsyncStream<Void>.Continuation) {
            let arrival = Arrival()
            self.batch = batch
            self.arrival = arrival
            outcomes = Task {
                let outcomes = await pending.outcomes()
                arrival.arrived.store(true, ordering: .releasing)
                ring.yield()
                return outcomes
            }
        }

        var isSettled: Bool { arrival.arrived.load(ordering: .acquiring) }
    }
    private let state = Mutex<(status: Status, delivered: Int, retried: Int, deadLettered: Int)>((.running, 0, 0, 0))
    private let metrics: Metrics

    struct Metrics {
        let delivered: Counter
        let failed: Counter
        let retried: Counter
        let deadLettered: Counter
        let latency: CoreMetrics.Timer

        init(sink: String) {
            let dimensions = [("sink", sink)]
            delivered = Counter(label: MetricName.delivered, dimensions: dimensions)
            failed = Counter(label: MetricName.failed, dimensions: dimensions)
            retried = Counter(label: MetricName.retried, dimensions: dimensions)
            deadLettered = Counter(label: MetricName.deadLettered, dimensions: dimensions)
            latency = CoreMetrics.Timer(label: MetricName.deliveryLatency, dimensions: dimensions, preferredDisplayUnit: .seconds)
        }
    }

    /// `beforeDelivery` runs before each batch goes to the sink the first time. `timekeeper` is
    /// what the lingering and the retries sleep on, and what measures the delivery latency from
    /// the events' `receivedAt`.
    public init(sink: any Sink, index: Int, options: Options = Options(), deadLetters: (any DeadLetters)?, timekeeper: Timekeeper = .continuous(),
                logger: Logger, beforeDelivery: @escaping @Sendable ([OutboundEvent]) async -> Void = { _ in },
                acknowledge: @escaping @Sendable ([DeliveryLedger.Token], Int) async -> Void) {
        self.sink = sink
        self.timekeeper = timekeeper
        self.beforeDelivery = beforeDelivery
        self.index = index
        self.options = options
        self.filter = options.filter.acceptsAll ? nil : options.filter
        let (doorbell, ring) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.doorbell = doorbell
        self.ring = ring
        var becameNonEmpty: (@Sendable () -> Void)?
        if options.batchesInFlight > 1 { becameNonEmpty = { ring.yield() } }
        self.buffer = BoundedBuffer(maxCount: options.maxBufferedEvents, maxBytes: options.maxBufferedBytes, becameNonEmpty: becameNonEmpty)
        self.deadLetters = deadLetters
        self.acknowledge = acknowledge
        var logger = logger
        logger[metadataKey: "sink"] = "\(sink.name)"
        self.logger = logger
        metrics = Metrics(sink: sink.name)
    }

    public var status: Status { state.withLock { $0.status } }
    public var delivered: Int { state.withLock { $0.delivered } }
    public var retried: Int { state.withLock { $0.retried } }
    public var deadLettered: Int { state.withLock { $0.deadLettered } }
    public var buffered: Int { buffer.count }
    public var bufferedBytes: Int { buffer.byteCount }
    public var bufferCapacity: Int { buffer.maxCount }

    /// Hands an event to the pipeline, waiting while its buffer is full.
    public func enqueue(_ event: OutboundEvent) async throws {
        try await buffer.push(event, bytes: event.size)
    }

    /// No more events: `run` delivers what is buffered, then returns.
    public func finish() {
        buffer.close()
    }

    /// Delivers until finished and drained, or cancelled; a fatal sink error ends it with
    /// `SinkStopped`.
    public func run() async throws {
        var random = SystemRandomNumberGenerator()
        var inFlight: [InFlight] = []
        var doorbell = self.doorbell.makeAsyncIterator()
        while true {
            if let oldest = inFlight.first, oldest.isSettled {
                inFlight.removeFirst()
                // An object with a change to send again holds back its later changes, in this
                // batch and in those sent after it, so that its last record is its latest change.
                var held: Set<String> = []
                var settled = try await settle(oldest.batch, await oldest.outcomes.value, held: &held)
                guard !settled.again.isEmpty || settled.fatal != nil else { continue }
                for later in inFlight {
                    let laterSettled = try await settle(later.batch, await later.outcomes.value, held: &held)
                    settled.again += laterSettled.again
                    settled.fatal = settled.fatal ?? laterSettled.fatal
                }
                inFlight.removeAll()
                var fatal = settled.fatal
                if fatal == nil { fatal = try await retry(settled.again, random: &random) }
                if let fatal {
                    logger.error("the sink cannot go on: \(fatal). The checkpoint stays before the first event not delivered, so nothing is lost when kubebridge is started again")
                    state.withLock { $0.status = .stopped(fatal) }
                    throw SinkStopped(sink: sink.name, reason: fatal)
                }
                continue
            }
            if !Task.isCancelled, inFlight.count < max(1, options.batchesInFlight) {
                if inFlight.isEmpty {
                    guard let batch = await nextBatch() else { return }
                    inFlight.append(InFlight(batch, await send(batch), ring: ring))
                    continue
                }
                // With batches in flight, what is there now goes at once: lingering would hold it
                // back for nothing, since the sink is busy with those anyway.
                let batch = buffer.takeAvailable(maxCount: options.batchSize, maxBytes: options.batchBytes)
                if !batch.isEmpty {
                    inFlight.append(InFlight(batch, await send(batch), ring: ring))
                    continue
                }
            }
            guard !inFlight.isEmpty else { return }
            // The oldest batch's outcomes, or (with room for another batch) events to send.
            if Task.isCancelled || inFlight.count >= max(1, options.batchesInFlight) {
                _ = await inFlight[0].outcomes.value
            } else {
                _ = await doorbell.next()
            }
        }
    }

    /// The next batch: waits for its first event, then up to `linger` for it to fill up; nil once
    /// finished and drained.
    private func nextBatch() async -> [OutboundEvent]? {
        guard var batch = await buffer.take(maxCount: options.batchSize, maxBytes: options.batchBytes) else { return nil }
        if options.linger > .zero, batch.count < options.batchSize {
            try? await timekeeper.sleep(options.linger)
            let bytes = batch.reduce(0) { $0 + $1.size }
            batch += buffer.takeAvailable(maxCount: options.batchSize - batch.count, maxBytes: options.batchBytes - bytes)
        }
        return batch
    }

    private func send(_ batch: [OutboundEvent]) async -> PendingDelivery {
        await beforeDelivery(batch)
        return await sink.send(batch)
    }

    /// Sends `events` again (in order) after a backoff, until every one is delivered or
    /// dead-lettered; the reason when the sink hit a fatal error.
    private func retry(_ events: [OutboundEvent], random: inout SystemRandomNumberGenerator) async throws -> String? {
        var remaining = events
        var attempt = 0
        while !remaining.isEmpty {
            attempt += 1
            try await timekeeper.sleep(options.retry.delay(attempt: attempt, using: &random))
            metrics.retried.increment(by: remaining.count)
            var held: Set<String> = []
            let settled = try await settle(remaining, await sink.send(remaining).outcomes(), held: &held)
            if let fatal = settled.fatal { return fatal }
            remaining = settled.again
        }
        return nil
    }

    /// Acknowledges what a batch's outcomes confirm, dead-letters what they reject, and returns
    /// what is to be sent again. `held` holds the objects with a change to send again: their later
    /// changes are sent again too, confirmed or not.
    private func settle(_ batch: [OutboundEvent], _ outcomes: [DeliveryOutcome], held: inout Set<String>) async throws
        -> (again: [OutboundEvent], fatal: String?) {
        precondition(outcomes.count == batch.count, "\(sink.name) returned \(outcomes.count) outcomes for \(batch.count) events")
        var confirmed: [DeliveryLedger.Token] = []
        confirmed.reserveCapacity(batch.count)
        var again: [OutboundEvent] = []
        var fatal: String?
        let now = timekeeper.now()
        var delivered = 0
        for (event, outcome) in zip(batch, outcomes) {
            var outcome = outcome
            if !held.isEmpty, outcome == .delivered || outcome.isRejection, held.contains(event.envelope.partitionKey) {
                outcome = .retriable("an earlier change of the same object was not confirmed")
            }
            switch outcome {
            case .delivered:
                delivered += 1
                confirmed.append(event.token)
                metrics.latency.recordNanoseconds(Self.nanoseconds(now - event.receivedAt))
            case .rejected(let reason):
                try await deadLetter(event, reason: reason)
                confirmed.append(event.token)
                metrics.latency.recordNanoseconds(Self.nanoseconds(now - event.receivedAt))
            case .retriable(let reason):
                if again.isEmpty { logger.warning("delivery failed, retrying: \(reason)") }
                again.append(event)
                held.insert(event.envelope.partitionKey)
            case .fatal(let reason):
                fatal = fatal ?? reason
                again.append(event)
                held.insert(event.envelope.partitionKey)
            }
        }
        state.withLock { state in
            state.delivered += confirmed.count
            state.retried += again.count
        }
        if delivered > 0 { metrics.delivered.increment(by: delivered) }
        if !again.isEmpty { metrics.failed.increment(by: again.count) }
        if !confirmed.isEmpty { await acknowledge(confirmed, index) }
        return (again, fatal)
    }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    private func deadLetter(_ event: OutboundEvent, reason: String) async throws {
        state.withLock { $0.deadLettered += 1 }
        metrics.deadLettered.increment()
        logger.error("event \(event.envelope.id) rejected for good: \(reason); written to the dead-letter file")
        guard let deadLetters else {
            logger.error("no dead-letter file is configured: event \(event.envelope.id) (\(event.envelope.subject)) is only logged")
            return
        }
        try await deadLetters.write(event, sink: sink.name, reason: reason)
    }
}
