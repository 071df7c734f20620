import Foundation
import KubeModel
import NIOCore

/// One event as a sink receives it.
public struct OutboundEvent: Sendable {
    public var envelope: Envelope
    public var token: DeliveryLedger.Token
    public var resource: GroupVersionResource
    public var namespace: String?
    /// The `Ledger`'s row number to wait for before a sink may see the event; 0 when the object
    /// has its checkpoint row already.
    public var recording: UInt64
    /// When the bridge received the change, on its ledger's timekeeper: for the delivery latency.
    public var receivedAt: Duration
    /// The object's size, for the buffer's byte bound.
    public var size: Int { envelope.data.readableBytes + 512 }

    public init(envelope: Envelope, token: DeliveryLedger.Token, resource: GroupVersionResource, namespace: String?, recording: UInt64 = 0,
                receivedAt: Duration = .zero) {
        self.envelope = envelope
        self.token = token
        self.resource = resource
        self.namespace = namespace
        self.recording = recording
        self.receivedAt = receivedAt
    }
}

/// What became of one event.
public enum DeliveryOutcome: Sendable, Equatable {
    /// The sink's destination confirmed it (broker ack, 2xx, fsync).
    case delivered
    /// Not now: sent again after a backoff.
    case retriable(String)
    /// Never: written to the dead-letter file with the reason, then counted as delivered.
    case rejected(String)
    /// The sink cannot go on (a full disk, a fenced producer): its pipeline stops and holds the
    /// checkpoint where it is.
    case fatal(String)
}

/// A batch handed to a sink's destination whose confirmations are still to come.
public struct PendingDelivery: Sendable {
    private let wait: @Sendable () async -> [DeliveryOutcome]

    /// `outcomes` waits for the destination's confirmations of the batch.
    public init(_ outcomes: @escaping @Sendable () async -> [DeliveryOutcome]) {
        wait = outcomes
    }

    /// A batch whose outcomes are known already.
    public static func settled(_ outcomes: [DeliveryOutcome]) -> PendingDelivery {
        PendingDelivery { outcomes }
    }

    /// One outcome per event of the batch, in order.
    public func outcomes() async -> [DeliveryOutcome] {
        await wait()
    }
}

/// A destination of events.
public protocol Sink: Sendable {
    var name: String { get }

    /// Delivers a batch and returns one outcome per event, in order: what the destination said of
    /// each. Per-object order is the pipeline's to keep (an event confirmed after an earlier event
    /// of its object was not is sent again after that one), so a sink reports outcomes as they are.
    func deliver(_ batch: [OutboundEvent]) async -> [DeliveryOutcome]

    /// Hands a batch to the destination and returns without waiting for its confirmations, so
    /// that the pipeline can send the next batches meanwhile (up to its `batchesInFlight`). The
    /// destination must take batches in the order they are sent. The default delivers the batch
    /// before it returns.
    func send(_ batch: [OutboundEvent]) async -> PendingDelivery

    /// Flushes what is pending and releases the sink's resources.
    func close() async throws

    /// Whether the sink can deliver now (connected to its broker, say), for readiness; nil when
    /// the sink cannot tell before it tries.
    var isConnected: Bool? { get }
}

extension Sink {
    public var isConnected: Bool? { nil }

    public func send(_ batch: [OutboundEvent]) async -> PendingDelivery {
        .settled(await deliver(batch))
    }
}

/// Where rejected events go, with the reason: never dropped silently. `DeadLetterFile` (FileSink)
/// appends them to a file, durable before `write` returns.
public protocol DeadLetters: Sendable {
    func write(_ event: OutboundEvent, sink: String, reason: String) async throws
    func close() async throws
}

extension DeliveryOutcome {
    var isRejection: Bool {
        if case .rejected = self { return true }
        return false
    }
}
