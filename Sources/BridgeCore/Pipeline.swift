import CoreMetrics
import DequeModule
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

        let outcomes: Task<[DeliveryOutcome], Never>
        private let arrival: Arrival

        init(_ pending: PendingDelivery, ring: AsyncStream<Void>.Continuation) {
            let arrival = Arrival()
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
    /// `SinkStopped`. What to send, settle, retry and when is the `PipelineStateMachine`'s to
    /// decide; this does it.
    public func run() async throws {
        var machine = PipelineStateMachine(batchesInFlight: options.batchesInFlight, linger: options.linger, retry: options.retry)
        var inFlight: Deque<InFlight> = []
        var doorbell = self.doorbell.makeAsyncIterator()
        while true {
            if let oldest = inFlight.first, oldest.isSettled {
                inFlight.removeFirst()
                try await perform(machine.settle(await oldest.outcomes.value, at: timekeeper.now()))
                continue
            }
            switch machine.next(cancelled: Task.isCancelled) {
            case .takeBatch(let linger):
                guard let batch = await nextBatch(linger: linger) else { return }
                machine.sent(batch)
                await beforeDelivery(batch)
                inFlight.append(InFlight(await sink.send(batch), ring: ring))
            case .takeAvailable:
                // With batches in flight, what is there now goes at once: lingering would hold it
                // back for nothing, since the sink is busy with those anyway.
                let batch = buffer.takeAvailable(maxCount: options.batchSize, maxBytes: options.batchBytes)
                if batch.isEmpty {
                    _ = await doorbell.next()
                    continue
                }
                machine.sent(batch)
                await beforeDelivery(batch)
                inFlight.append(InFlight(await sink.send(batch), ring: ring))
            case .awaitOutcomes:
                _ = await inFlight[0].outcomes.value
            case .waitUntil(let deadline):
                try await timekeeper.sleep(deadline - timekeeper.now())
                let retry = machine.deadlineReached()
                metrics.retried.increment(by: retry.events.count)
                inFlight.append(InFlight(await sink.send(retry.events), ring: ring))
            case .finished:
                return
            }
        }
    }

    /// The next batch: waits for its first event, then up to `linger` for it to fill up; nil once
    /// finished and drained.
    private func nextBatch(linger: Duration) async -> [OutboundEvent]? {
        guard var batch = await buffer.take(maxCount: options.batchSize, maxBytes: options.batchBytes) else { return nil }
        if linger > .zero, batch.count < options.batchSize {
            try? await timekeeper.sleep(linger)
            let bytes = batch.reduce(0) { $0 + $1.size }
            batch += buffer.takeAvailable(maxCount: options.batchSize - batch.count, maxBytes: options.batchBytes - bytes)
        }
        return batch
    }

    /// Writes a settlement's dead letters, then acknowledges and counts what it confirmed; throws
    /// `SinkStopped` when the sink cannot go on.
    private func perform(_ settlement: PipelineStateMachine.Settlement) async throws {
        for (event, reason) in settlement.deadLetters { try await deadLetter(event, reason: reason) }
        if let failure = settlement.failure { logger.warning("delivery failed, retrying: \(failure)") }
        state.withLock { state in
            state.delivered += settlement.confirmed.count
            state.retried += settlement.again
        }
        if settlement.delivered > 0 { metrics.delivered.increment(by: settlement.delivered) }
        if settlement.again > 0 { metrics.failed.increment(by: settlement.again) }
        for latency in settlement.latencies { metrics.latency.recordNanoseconds(Self.nanoseconds(latency)) }
        if !settlement.confirmed.isEmpty { await acknowledge(settlement.confirmed, index) }
        if let stop = settlement.stop {
            logger.error("the sink cannot go on: \(stop). The checkpoint stays before the first event not delivered, so nothing is lost when kubebridge is started again")
            state.withLock { $0.status = .stopped(stop) }
            throw SinkStopped(sink: sink.name, reason: stop)
        }
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
