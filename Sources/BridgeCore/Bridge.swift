import CoreMetrics
import Foundation
import KubeModel
import Logging
import Synchronization

/// Watches the bridge's flow, for benchmarks: each change registered, and each acknowledgement.
public protocol BridgeProbe: Sendable {
    func registered(_ token: AckTracker.Token)
    func acknowledged(_ tokens: [AckTracker.Token], sink: Int)
}

/// Connects the informers to the sinks: each change becomes one envelope, is registered with the
/// `AckTracker` in arrival order, and is handed to every pipeline; acknowledgements move the
/// watermarks, and the `Checkpointer` saves them.
public final class Bridge: Sendable {
    public let pipelines: [Pipeline]
    let envelopes: EnvelopeBuilder
    let checkpointer: Checkpointer
    let recorder: ObjectRecorder
    let tracker: TrackerBox
    let deadLetters: DeadLetterFile?
    let logger: Logger
    let probe: (any BridgeProbe)?
    private let counts = Mutex<(received: Int, unencodable: Int)>((0, 0))
    private struct Received: Hashable, Sendable {
        var resource: GroupVersionResource
        var type: ChangeType
    }

    private let receivedCounters = CounterCache<Received>(MetricName.changesReceived)
    private let filteredCounters = CounterCache<String>(MetricName.filtered)
    private let unencodableCounter = Counter(label: MetricName.unencodable)

    /// The tracker, shared by the bridge and its pipelines' acknowledgement callbacks.
    final class TrackerBox: Sendable {
        let state: Mutex<AckTracker>
        init(_ tracker: AckTracker) { state = Mutex(tracker) }
    }

    /// `makeSinks` gets the acknowledgement callback each pipeline must be given.
    public init(
        sinks: [(any Sink, Pipeline.Options)], envelopes: EnvelopeBuilder, checkpointer: Checkpointer,
        deadLetters: DeadLetterFile?, logger: Logger, probe: (any BridgeProbe)? = nil
    ) {
        let tracker = TrackerBox(AckTracker(sinkCount: max(1, sinks.count)))
        let recorder = ObjectRecorder(store: checkpointer.store, logger: logger)
        self.recorder = recorder
        self.probe = probe
        self.tracker = tracker
        self.envelopes = envelopes
        self.checkpointer = checkpointer
        self.deadLetters = deadLetters
        self.logger = logger
        self.pipelines = sinks.enumerated().map { index, sink in
            Pipeline(sink: sink.0, index: index, options: sink.1, deadLetters: deadLetters, logger: logger, beforeDelivery: { batch in
                if let recording = batch.lazy.map(\.recording).max(), recording > 0 {
                    await recorder.waitUntilRecorded(through: recording)
                }
            }) { tokens, sinkIndex in
                let advances = tracker.state.withLock { tracker in tokens.compactMap { tracker.acknowledge($0, sink: sinkIndex) } }
                probe?.acknowledged(tokens, sink: sinkIndex)
                for advance in advances { await checkpointer.record(advance) }
            }
        }
    }

    public var received: Int { counts.withLock { $0.received } }

    /// The informers' consumer. It returns once every pipeline took the event, so a full pipeline
    /// holds the watcher, and the watcher holds the API server.
    public func accept(_ event: ResourceEvent) async throws {
        switch event {
        case .progress:
            if let advance = tracker.state.withLock({ $0.register(event).advance }) {
                await checkpointer.record(advance)
            }
        case .change(let change):
            counts.withLock { $0.received += 1 }
            let now = ContinuousClock.now
            receivedCounters.increment(Received(resource: change.resource, type: change.type)) {
                [("resource", $0.resource.metricLabel), ("type", $0.type.rawValue)]
            }
            let envelope: Envelope
            do {
                envelope = try envelopes.envelope(for: change, receivedAt: Date())
            } catch {
                try await unencodable(change, error: error)
                return
            }
            guard let token = tracker.state.withLock({ $0.register(event, at: now).token }) else { return }
            probe?.registered(token)
            let recording = change.unrecorded ? await recorder.add(UnrecordedObject(change)) : 0
            var skipping: [Int] = []
            for pipeline in pipelines {
                if let filter = pipeline.filter, !filter.accepts(resource: change.resource, namespace: change.metadata.namespace, type: change.type) {
                    skipping.append(pipeline.index)
                    filteredCounters.increment(pipeline.sink.name) { [("sink", $0)] }
                    continue
                }
                try await pipeline.enqueue(OutboundEvent(envelope: envelope, token: token, resource: change.resource, namespace: change.metadata.namespace,
                                                         recording: recording, receivedAt: now))
            }
            if !skipping.isEmpty { await acknowledge(token, sinks: skipping) }
        }
    }

    /// An object whose bytes could not be edited (redaction needs to parse them): it is not sent
    /// as it is, since it may hold a Secret, but written to the dead-letter file and counted.
    private func unencodable(_ change: Change, error: Error) async throws {
        counts.withLock { $0.unencodable += 1 }
        unencodableCounter.increment()
        logger.error("cannot build the event of \(change.resource) \(change.metadata.namespace ?? "")/\(change.metadata.name) at \(change.metadata.resourceVersion): \(error)")
        let token = tracker.state.withLock { $0.register(.change(change)).token }
        if let deadLetters, let token {
            var raw = change
            raw.object.bytes = .init(string: #"{"unencodable":true}"#)
            let placeholder = try envelopes.envelope(for: raw, receivedAt: Date())
            try await deadLetters.write(OutboundEvent(envelope: placeholder, token: token, resource: change.resource, namespace: change.metadata.namespace),
                                       sink: "envelope", reason: "\(error)")
        }
        if let token { await acknowledge(token, sinks: Array(0..<max(1, pipelines.count))) }
    }

    /// Acknowledges an event for sinks that will not see it.
    private func acknowledge(_ token: AckTracker.Token, sinks: [Int]) async {
        let advances = tracker.state.withLock { tracker in sinks.compactMap { tracker.acknowledge(token, sink: $0) } }
        for sink in sinks { probe?.acknowledged([token], sink: sink) }
        for advance in advances { await checkpointer.record(advance) }
    }

    /// Runs the pipelines and the checkpointer until cancelled or finished.
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
        tracker.state.withLock { $0.watermark(of: scope) }
    }

    /// Changes of a scope received and not yet confirmed by every sink.
    public func unconfirmed(in scope: WatchScope) -> Int {
        tracker.state.withLock { $0.unconfirmed(in: scope) }
    }
}
