import BridgeCheckpoint
import BridgeCore
import FileSink
import Foundation
import KafkaSink
import KubeAPI
import KubeInformer
import KubeModel
import Logging
import NATSSink
import NIOCore
import Prometheus
import ServiceLifecycle
import WebhookSink

/// kubebridge assembled from its configuration: informers → bridge → pipelines → sinks, and the
/// ledger. Services start in that dependency order and stop in reverse: on SIGTERM the watches
/// stop first, the pipelines deliver what is buffered, the sinks flush, and the ledger saves the
/// checkpoint last.
public struct BridgeRuntime: Sendable {
    public let configuration: Configuration
    public let client: KubeClient
    public let bridge: Bridge
    public let supervisor: InformerSupervisor
    public let ledger: Ledger
    /// Completed once the first sync is through, its checkpoints saved and its memory handed back
    /// (`settled()`, for one caller at a time).
    let settledAfterSync = Completion<Void>()
    let store: any CheckpointStore
    let deadLetters: DeadLetterFile
    let sinks: [any Sink]
    let logger: Logger
    let metricsRegistry: PrometheusCollectorRegistry?
    /// The checkpoint each scope resumed from.
    let resumedFrom: [WatchScope: String]
    let storeDescription: String
    /// Sinks confirming nothing while events wait, for readiness.
    let deliveryStalls: DeliveryStalls
    /// The operations endpoints, when configured.
    public private(set) var operations: OperationsServer?

    /// Opens the state, the sinks and the cluster client; nothing runs yet.
    /// `metrics`: the registry the process's metrics go to (see `MetricsSystem.bootstrap`), which
    /// `/metrics` shows.
    /// `mustStop` is called when this process must stop at once, without draining: another
    /// replica claimed the shared checkpoint. It should end the process.
    /// `endpoints`: the process's operations endpoints, which answer for this runtime once it is
    /// whole; without them it binds its own (`operations`) and serves them while it runs.
    public init(configuration: Configuration, logger: Logger, probe: (any BridgeProbe)? = nil, metrics: PrometheusCollectorRegistry? = nil,
                endpoints: OperationsEndpoints? = nil, mustStop: @escaping @Sendable (any Error) -> Void = { _ in }) async throws {
        self.configuration = configuration
        self.deliveryStalls = DeliveryStalls(limit: configuration.stalledDeliveryAfter)
        self.logger = logger
        metricsRegistry = metrics
        let kubeConfiguration = try KubeConfigLoader.load(kubeconfig: configuration.cluster.kubeconfig, context: configuration.cluster.context)
        do {
            try FileManager.default.createDirectory(atPath: configuration.stateDirectory, withIntermediateDirectories: true)
        } catch {
            throw ConfigurationError(problems: ["state.directory \(configuration.stateDirectory) cannot be created: \(error.localizedDescription)"])
        }
        let client = try KubeClient(configuration: kubeConfiguration, logger: logger)
        self.client = client
        var opened: (store: (any CheckpointStore)?, sinks: [any Sink]) = (nil, [])
        let checkpoints: [WatchScope: Checkpoint]
        do {
            let store: any CheckpointStore
            switch configuration.checkpointStore {
            case .sqlite:
                store = try SQLiteCheckpointStore(path: "\(configuration.stateDirectory)/checkpoints.sqlite")
                storeDescription = "\(configuration.stateDirectory)/checkpoints.sqlite"
            case .kubernetes(let namespace, let name):
                store = ConfigMapCheckpointStore(client: client, namespace: namespace, name: name,
                                                 holder: configuration.leaderElection?.identity ?? LeaderElectionOptions.defaultIdentity,
                                                 logger: logger, onFenced: mustStop)
                storeDescription = "ConfigMap \(namespace)/\(name)"
            }
            opened.store = store
            self.store = store
            checkpoints = try await store.load()
            deadLetters = try DeadLetterFile(path: "\(configuration.stateDirectory)/dead-letters.jsonl")
            for sink in configuration.sinks {
                switch sink.kind {
                case .file(let options):
                    opened.sinks.append(FileSink(name: sink.name, options: options))
                case .kafka(let options):
                    opened.sinks.append(try KafkaSink(name: sink.name, options: options, logger: logger))
                case .nats(let options):
                    opened.sinks.append(try await NATSSink(name: sink.name, options: options, logger: logger))
                case .webhook(let options):
                    opened.sinks.append(try WebhookSink(name: sink.name, options: options, logger: logger))
                }
            }
        } catch {
            for sink in opened.sinks { try? await sink.close() }
            try? await opened.store?.close()
            try? await client.shutdown()
            throw error
        }
        let sinks = opened.sinks
        resumedFrom = checkpoints.compactMapValues(\.resourceVersion)
        self.sinks = sinks
        // Without the process's endpoints, its own: they bind now and answer once the runtime is
        // whole, at the end of this init.
        let own: OperationsEndpoints?
        do {
            own = endpoints == nil ? try await OperationsEndpoints.bind(configuration, metrics: metrics, logger: logger) : nil
        } catch {
            for sink in sinks { try? await sink.close() }
            try? await store.close()
            try? await client.shutdown()
            throw error
        }
        operations = own?.server
        ledger = Ledger(store: store, sinkCount: sinks.count, saveInterval: configuration.checkpointInterval, logger: logger)
        bridge = Bridge(sinks: zip(sinks, configuration.sinks.map(\.pipeline)).map { ($0, $1) },
                        envelopes: EnvelopeBuilder(options: configuration.envelopes), ledger: ledger,
                        deadLetters: deadLetters, logger: logger, probe: probe, changedPaths: configuration.changedPaths)
        var informerOptions = InformerOptions()
        informerOptions.selection = configuration.selection
        if case .kubernetes(let namespace, _) = configuration.checkpointStore {
            informerOptions.selection.ownObjects.append(.init(kind: "ConfigMap", namespace: namespace, label: ConfigMapCheckpointStore.label))
        }
        if let election = configuration.leaderElection {
            informerOptions.selection.ownObjects.append(.init(kind: "Lease", namespace: election.namespace, name: election.name))
        }
        supervisor = InformerSupervisor(client: client, options: informerOptions, resumePoint: { scope in
            checkpoints[scope].map { ResumePoint(resourceVersion: $0.resourceVersion, known: $0.known) }
        }, checkpointedScopes: Array(checkpoints.keys), logger: logger)
        logger.info("resuming \(checkpoints.count) watch scopes from \(storeDescription)")
        let runtime = self
        (endpoints ?? own)?.answer { path in await runtime.respond(to: path) }
    }

    /// Returns once the first sync is through, the checkpoints after it are saved and the memory it
    /// used is handed back: the bridge at rest, for a measurement of what it holds.
    public func settled() async {
        await settledAfterSync.wait()
    }

    /// Runs until SIGTERM or SIGINT (graceful), until `stopAfter` has passed (graceful too), or
    /// until a service fails.
    public func run(stopAfter: Duration? = nil) async throws {
        let group = ServiceGroup(configuration: .init(
            services: [
                .init(service: LedgerService(ledger: ledger)),
                .init(service: BridgeService(bridge: bridge, sinks: sinks, drainTimeout: configuration.drainTimeout, logger: logger),
                      // A sink that cannot go on stops the watches first and the ledger last.
                      failureTerminationBehavior: .gracefullyShutdownGroup),
                .init(service: InformerService(supervisor: supervisor, bridge: bridge, settled: settledAfterSync)),
            ] + (operations.map { [ServiceGroupConfiguration.ServiceConfiguration(service: $0)] } ?? []),
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        do {
            // true: the service group finished; false: the timer fired and asked it to stop.
            try await withThrowingTaskGroup(of: Bool.self) { tasks in
                tasks.addTask {
                    try await group.run()
                    return true
                }
                if let stopAfter {
                    tasks.addTask {
                        try await Task.sleep(for: stopAfter)
                        await group.triggerGracefulShutdown()
                        return false
                    }
                }
                while let finished = try await tasks.next(), !finished {}
                tasks.cancelAll()
            }
        } catch {
            try? await shutdown()
            throw error
        }
        try await shutdown()
    }

    func shutdown() async throws {
        try await deadLetters.close()
        try await store.close()
        try await client.shutdown()
    }
}

/// Saves checkpoints on their interval; on shutdown, once more, last of all.
struct LedgerService: Service {
    let ledger: Ledger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await ledger.run()
        }
    }
}

/// The pipelines; on shutdown they deliver what is buffered (within the drain timeout) and the
/// sinks are closed.
struct BridgeService: Service {
    let bridge: Bridge
    let sinks: [any Sink]
    let drainTimeout: Duration
    let logger: Logger

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await bridge.run() }
                group.addTask {
                    // The drain deadline starts with the shutdown.
                    try? await gracefulShutdown()
                    guard !Task.isCancelled else { return }
                    try? await Task.sleep(for: drainTimeout)
                    guard !Task.isCancelled else { return }
                    logger.warning("the pipelines did not drain within \(drainTimeout.spoken); what is left is delivered after the next start")
                }
                try await group.next()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            bridge.finish()
        }
        for sink in sinks { try await sink.close() }
    }
}

/// Discovery and the watches; on shutdown they stop first, so nothing new enters the pipelines.
struct InformerService: Service {
    let supervisor: InformerSupervisor
    let bridge: Bridge
    /// Completed once the memory of the first sync is handed back.
    let settled: Completion<Void>

    func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                // Once every watch has listed and the sinks have confirmed (nearly) all of it.
                while !supervisor.isSynced || supervisor.watchedScopes.reduce(0, { $0 + bridge.unconfirmed(in: $1) }) > 1000 {
                    try await bridge.ledger.timekeeper.sleep(.milliseconds(500))
                }
                FreedMemory.release()
                // Again once the states sent during the sync are saved (when states are compared,
                // the ledger holds them until then), or, on a cluster too busy to be without
                // unsaved states, two saves later.
                let saves = bridge.ledger.saves
                await bridge.ledger.waitAfterSaves { !$0.holdsUnsavedStates || $0.saves >= saves + 2 }
                try Task.checkCancellation()
                FreedMemory.release()
                settled.complete(())
            }
            defer { group.cancelAll() }
            try await cancelWhenGracefulShutdown {
                try await supervisor.run { try await bridge.accept($0) }
            }
        }
    }
}

/// The first lists read every object of the cluster in pages, and the sinks' buffers fill up behind
/// them; glibc keeps what they freed in its per-thread arenas. Once they are through, it is handed
/// back to the system, so that the resident size shows what the bridge holds.
enum FreedMemory {
    static func release() {
        #if canImport(Glibc)
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "malloc_trim") else { return }
        _ = unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)(0)
        #endif
    }
}
