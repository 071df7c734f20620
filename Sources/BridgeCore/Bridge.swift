import CoreMetrics
import Foundation
import KubeModel
import Logging
import NIOCore
import Synchronization

/// Watches the bridge's flow, for benchmarks: each change registered, and each acknowledgement.
public protocol BridgeProbe: Sendable {
    func registered(_ token: DeliveryLedger.Token)
    func acknowledged(_ tokens: [DeliveryLedger.Token], sink: Int)
}

/// Connects the informers to the sinks: each change becomes one envelope, is entered in the
/// `Ledger` in arrival order, and is handed to every pipeline; acknowledgements move the
/// watermarks, and the ledger saves them.
public final class Bridge: Sendable {
    public let pipelines: [Pipeline]
    let envelopes: EnvelopeBuilder
    public let ledger: Ledger
    let deadLetters: (any DeadLetters)?
    let logger: Logger
    let probe: (any BridgeProbe)?
    /// `resources.changedPaths`: changes whose paths it refuses go to no sink.
    let changedPaths: ChangedPathFilter?
    /// Whether each change is compared with the state last sent of its object.
    let comparesStates: Bool
    private let counts = Mutex<(received: Int, unencodable: Int)>((0, 0))
    private struct Received: Hashable, Sendable {
        var resource: GroupVersionResource
        var type: ChangeType
    }

    private let receivedCounters = CounterCache<Received>(MetricName.changesReceived)
    private let filteredCounters = CounterCache<String>(MetricName.filtered)
    private let unencodableCounter = Counter(label: MetricName.unencodable)

    /// `ledger` keeps the order of the sinks' acknowledgements and the checkpoint; it must be
    /// made for as many sinks as `sinks` has, and run (`Ledger.run`) for as long as the bridge.
    public init(
        sinks: [(any Sink, Pipeline.Options)], envelopes: EnvelopeBuilder, ledger: Ledger,
        deadLetters: (any DeadLetters)?, logger: Logger, probe: (any BridgeProbe)? = nil, changedPaths: ChangedPathFilter? = nil
    ) {
        self.changedPaths = changedPaths
        comparesStates = envelopes.options.changedPaths && ledger.keepsSentStates
        precondition(ledger.sinkCount == max(1, sinks.count), "a ledger for \(ledger.sinkCount) sinks, given \(sinks.count)")
        self.probe = probe
        self.ledger = ledger
        self.envelopes = envelopes
        self.deadLetters = deadLetters
        self.logger = logger
        self.pipelines = sinks.enumerated().map { index, sink in
            Pipeline(sink: sink.0, index: index, options: sink.1, deadLetters: deadLetters, timekeeper: ledger.timekeeper, logger: logger,
                     beforeDelivery: { batch in
                if let recording = batch.lazy.map(\.recording).max(), recording > 0 {
                    await ledger.waitUntilRecorded(through: recording)
                }
            }) { tokens, sinkIndex in
                ledger.acknowledged(tokens, sink: sinkIndex)
                probe?.acknowledged(tokens, sink: sinkIndex)
            }
        }
    }

    public var received: Int { counts.withLock { $0.received } }

    /// The informers' consumer. It returns once every pipeline took the event, so a full pipeline
    /// holds the watcher, and the watcher holds the API server.
    public func accept(_ event: ResourceEvent) async throws {
        switch event {
        case .progress:
            _ = ledger.received(event)
        case .change(let change):
            counts.withLock { $0.received += 1 }
            let now = ledger.timekeeper.now()
            receivedCounters.increment(Received(resource: change.resource, type: change.type)) {
                [("resource", $0.resource.metricLabel), ("type", $0.type.rawValue)]
            }
            let envelope: Envelope
            do {
                envelope = try envelopes.envelope(for: change, receivedAt: Date(), previous: previousState(of: change))
            } catch {
                try await unencodable(change, error: error)
                return
            }
            let receipt = ledger.received(event, at: now, sentState: comparesStates && change.type != .deleted ? envelope.data : nil)
            guard let token = receipt.token else { return }
            probe?.registered(token)
            let recording = receipt.recording
            if let changedPaths, let paths = envelope.changedPaths, !changedPaths.accepts(paths) {
                filteredCounters.increment("resources") { [("sink", $0)] }
                acknowledge(token, sinks: Array(0..<max(1, pipelines.count)))
                return
            }
            var skipping: [Int] = []
            for pipeline in pipelines {
                if let filter = pipeline.filter,
                   !filter.accepts(resource: change.resource, namespace: change.metadata.namespace, type: change.type, changedPaths: envelope.changedPaths) {
                    skipping.append(pipeline.index)
                    filteredCounters.increment(pipeline.sink.name) { [("sink", $0)] }
                    continue
                }
                try await pipeline.enqueue(OutboundEvent(envelope: envelope, token: token, resource: change.resource, namespace: change.metadata.namespace,
                                                         recording: recording, receivedAt: now))
            }
            if !skipping.isEmpty { acknowledge(token, sinks: skipping) }
        }
    }

    /// The state last sent of the object a `modified` or `synced` change is of, when states are
    /// compared. A store that cannot be read costs the event its paths, not the event.
    private func previousState(of change: Change) -> ByteBuffer? {
        guard comparesStates, change.type == .modified || change.type == .synced else { return nil }
        do {
            return try ledger.sentState(of: change.metadata.uid, in: change.scope)
        } catch {
            logger.error("cannot read the state last sent of \(change.resource) \(change.metadata.namespace ?? "")/\(change.metadata.name): \(error); it goes without changedpaths")
            return nil
        }
    }

    /// An object whose bytes could not be edited (redaction needs to parse them): it is not sent
    /// as it is, since it may hold a Secret, but written to the dead-letter file and counted.
    private func unencodable(_ change: Change, error: Error) async throws {
        counts.withLock { $0.unencodable += 1 }
        unencodableCounter.increment()
        logger.error("cannot build the event of \(change.resource) \(change.metadata.namespace ?? "")/\(change.metadata.name) at \(change.metadata.resourceVersion): \(error)")
        let token = ledger.received(.change(change)).token
        if let deadLetters, let token {
            var raw = change
            raw.object.bytes = .init(string: #"{"unencodable":true}"#)
            let placeholder = try envelopes.envelope(for: raw, receivedAt: Date())
            try await deadLetters.write(OutboundEvent(envelope: placeholder, token: token, resource: change.resource, namespace: change.metadata.namespace),
                                       sink: "envelope", reason: "\(error)")
        }
        if let token { acknowledge(token, sinks: Array(0..<max(1, pipelines.count))) }
    }

    /// Acknowledges an event for sinks that will not see it.
    private func acknowledge(_ token: DeliveryLedger.Token, sinks: [Int]) {
        for sink in sinks {
            ledger.acknowledged([token], sink: sink)
            probe?.acknowledged([token], sink: sink)
        }
    }

    /// Runs the pipelines until cancelled or finished.
    public func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for pipeline in pipelines {
                group.addTask { try await pipeline.run() }
            }
            try await group.waitForAll()
        }
    }

    /// No more events: the pipelines deliver what they hold, then `run` returns.
    public func finish() {
        for pipeline in pipelines { pipeline.finish() }
    }

    public func watermark(of scope: WatchScope) -> String? {
        ledger.watermark(of: scope)
    }

    /// Changes of a scope received and not yet confirmed by every sink.
    public func unconfirmed(in scope: WatchScope) -> Int {
        ledger.unconfirmed(in: scope)
    }
}
