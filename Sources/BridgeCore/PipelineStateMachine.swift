import DequeModule
import KubeModel

/// What one sink's pipeline decides, as one value: how many batches may be out at the sink, what
/// a batch's outcomes confirm, dead-letter or send again, when a retry goes, and when the sink
/// stops for good. Its steps return what is to be done; the `Pipeline` does it (takes events from
/// the buffer, calls the sink, writes dead letters, acknowledges, sleeps) and reports back. Time
/// comes in as arguments: the machine never reads a clock.
///
/// The rules, each in one place:
/// - Outcomes are settled oldest batch first, whatever order they arrive in.
/// - Per-object order: an event not confirmed holds back every later change of its object, in its
///   batch and in the batches sent after it, confirmed or rejected, so that the last record of an
///   object at the destination is its latest change. They are all sent again, in order.
/// - After a failure no new batch goes until every batch out has its outcomes; then what failed
///   goes again after the retry backoff, alone, until it is all delivered or dead-lettered.
/// - A fatal outcome stops the sink once the batches out are settled: what they confirmed is
///   acknowledged, and nothing after.
public struct PipelineStateMachine: Sendable {
    /// What the driver is to do next.
    public enum Next: Sendable, Equatable {
        /// Wait for the buffer's first event, let the batch fill for `linger`, then `sent` it; the
        /// pipeline is done when the buffer is closed and drained.
        case takeBatch(linger: Duration)
        /// `sent` what the buffer holds now, without waiting; with nothing there, wait for the
        /// oldest batch's outcomes or for events, whichever comes first.
        case takeAvailable
        /// Wait for the oldest batch's outcomes, then `settle` them.
        case awaitOutcomes
        /// Sleep until this time, then `deadlineReached`.
        case waitUntil(Duration)
        /// Nothing is out and nothing more is to be sent: the pipeline is done.
        case finished
    }

    /// What a batch's outcomes come to, for the driver to perform in this order: write the dead
    /// letters, acknowledge, count; and stop when `stop` says so.
    public struct Settlement: Sendable {
        /// Events rejected for good, with the reason: written to the dead letters before their
        /// tokens are acknowledged.
        public var deadLetters: [(event: OutboundEvent, reason: String)] = []
        /// Delivered or dead-lettered: what the sink is done with.
        public var confirmed: [DeliveryLedger.Token] = []
        /// How long each confirmed event took from its receipt.
        public var latencies: [Duration] = []
        /// Confirmed by the destination itself (not dead-lettered).
        public var delivered = 0
        /// Events to be sent again.
        public var again = 0
        /// The first retriable failure, to be said once per batch.
        public var failure: String?
        /// The sink cannot go on: nothing more is delivered.
        public var stop: String?
    }

    /// Events resent after a backoff: send them, without waiting for recording (they waited the
    /// first time), and `settle` their outcomes like any batch's.
    public struct Retry: Sendable {
        public var events: [OutboundEvent]
        public var attempt: Int
    }

    private enum Phase: Sendable, CustomStringConvertible {
        /// New batches go, up to `batchesInFlight` at a time.
        case delivering
        /// A batch failed: no new batch goes; the batches still out are settled as their outcomes
        /// come, holding back the failed objects' later changes.
        case draining(again: [OutboundEvent], fatal: String?, held: Set<String>)
        /// Waiting out the backoff before `attempt`.
        case backingOff(events: [OutboundEvent], attempt: Int, until: Duration)
        /// Retry `attempt` is out.
        case retrying(attempt: Int)
        case stopped(String)

        var description: String {
            switch self {
            case .delivering: "delivering"
            case .draining(let again, _, _): "draining (\(again.count) to send again)"
            case .backingOff(let events, let attempt, let until): "backing off (\(events.count) events, attempt \(attempt) at \(until))"
            case .retrying(let attempt): "retrying (attempt \(attempt))"
            case .stopped(let reason): "stopped (\(reason))"
            }
        }
    }

    private let batchesInFlight: Int
    private let linger: Duration
    private let retry: Backoff
    private var jitter: SplitMix64
    private var phase = Phase.delivering
    /// The batches out at the sink, oldest first.
    private var inFlight: Deque<[OutboundEvent]> = []

    /// `seed` makes the retry backoff's jitter repeatable (tests); by default it is random.
    public init(batchesInFlight: Int, linger: Duration, retry: Backoff, seed: UInt64? = nil) {
        self.batchesInFlight = max(1, batchesInFlight)
        self.linger = linger
        self.retry = retry
        var system = SystemRandomNumberGenerator()
        jitter = SplitMix64(seed: seed ?? system.next())
    }

    public var batchesOut: Int { inFlight.count }

    /// What to do next; `cancelled` when the pipeline's task is: nothing new goes, what is out is
    /// settled.
    public func next(cancelled: Bool) -> Next {
        switch phase {
        case .delivering:
            if inFlight.isEmpty { return cancelled ? .finished : .takeBatch(linger: linger) }
            return cancelled || inFlight.count >= batchesInFlight ? .awaitOutcomes : .takeAvailable
        case .draining, .retrying:
            return .awaitOutcomes
        case .backingOff(_, _, let until):
            return .waitUntil(until)
        case .stopped:
            return .finished
        }
    }

    /// A batch was handed to the sink.
    public mutating func sent(_ batch: [OutboundEvent]) {
        guard case .delivering = phase, inFlight.count < batchesInFlight, !batch.isEmpty else {
            preconditionFailure("a batch of \(batch.count) sent while \(phase) with \(inFlight.count) out")
        }
        inFlight.append(batch)
    }

    /// The backoff is over: the events that failed go again.
    public mutating func deadlineReached() -> Retry {
        guard case .backingOff(let events, let attempt, _) = phase else { preconditionFailure("deadlineReached() while \(phase)") }
        phase = .retrying(attempt: attempt)
        inFlight.append(events)
        return Retry(events: events, attempt: attempt)
    }

    /// The oldest batch's outcomes, one per event in order, at `now`.
    public mutating func settle(_ outcomes: [DeliveryOutcome], at now: Duration) -> Settlement {
        guard let batch = inFlight.popFirst() else { preconditionFailure("outcomes arrived while \(phase) with no batch out") }
        precondition(outcomes.count == batch.count, "\(outcomes.count) outcomes for a batch of \(batch.count) events")
        var settlement = Settlement()
        switch phase {
        case .delivering:
            var held: Set<String> = []
            var again: [OutboundEvent] = []
            let fatal = Self.settle(batch, outcomes, at: now, held: &held, again: &again, into: &settlement)
            if !again.isEmpty || fatal != nil {
                phase = .draining(again: again, fatal: fatal, held: held)
                settlement.stop = finishDraining(at: now)
            }
        case .draining(var again, let fatal, var held):
            let later = Self.settle(batch, outcomes, at: now, held: &held, again: &again, into: &settlement)
            phase = .draining(again: again, fatal: fatal ?? later, held: held)
            settlement.stop = finishDraining(at: now)
        case .retrying(let attempt):
            var held: Set<String> = []
            var again: [OutboundEvent] = []
            if let fatal = Self.settle(batch, outcomes, at: now, held: &held, again: &again, into: &settlement) {
                phase = .stopped(fatal)
                settlement.stop = fatal
            } else if again.isEmpty {
                phase = .delivering
            } else {
                phase = .backingOff(events: again, attempt: attempt + 1, until: now + retry.delay(attempt: attempt + 1, using: &jitter))
            }
        case .backingOff, .stopped:
            preconditionFailure("outcomes arrived while \(phase)")
        }
        return settlement
    }

    /// Once the last batch out is settled after a failure: stop on a fatal outcome, else back off
    /// before the first retry. The reason when the sink stops.
    private mutating func finishDraining(at now: Duration) -> String? {
        guard inFlight.isEmpty, case .draining(let again, let fatal, _) = phase else { return nil }
        if let fatal {
            phase = .stopped(fatal)
            return fatal
        }
        phase = .backingOff(events: again, attempt: 1, until: now + retry.delay(attempt: 1, using: &jitter))
        return nil
    }

    /// The per-object order rule: settles one batch's outcomes into `settlement`, adding what is
    /// to be sent again to `again` and its objects to `held`. The first fatal reason, if any.
    private static func settle(_ batch: [OutboundEvent], _ outcomes: [DeliveryOutcome], at now: Duration, held: inout Set<String>,
                               again: inout [OutboundEvent], into settlement: inout Settlement) -> String? {
        var fatal: String?
        settlement.confirmed.reserveCapacity(settlement.confirmed.count + batch.count)
        settlement.latencies.reserveCapacity(settlement.latencies.count + batch.count)
        for (event, outcome) in zip(batch, outcomes) {
            var outcome = outcome
            if !held.isEmpty, outcome == .delivered || outcome.isRejection, held.contains(event.envelope.partitionKey) {
                outcome = .retriable("an earlier change of the same object was not confirmed")
            }
            switch outcome {
            case .delivered:
                settlement.delivered += 1
                settlement.confirmed.append(event.token)
                settlement.latencies.append(now - event.receivedAt)
            case .rejected(let reason):
                settlement.deadLetters.append((event, reason))
                settlement.confirmed.append(event.token)
                settlement.latencies.append(now - event.receivedAt)
            case .retriable(let reason):
                settlement.failure = settlement.failure ?? reason
                settlement.again += 1
                again.append(event)
                held.insert(event.envelope.partitionKey)
            case .fatal(let reason):
                fatal = fatal ?? reason
                settlement.again += 1
                again.append(event)
                held.insert(event.envelope.partitionKey)
            }
        }
        return fatal
    }
}
