import KubeModel
import KubeAPI
import Logging
import Synchronization

/// How the supervisor finds and follows resources.
public struct InformerOptions: Sendable {
    public var selection = ResourceSelection()
    public var watcher = WatcherOptions()
    /// Discovery runs again on this period (aggregated APIs come and go without CRDs), and at
    /// once when a CustomResourceDefinition changes.
    public var rediscoveryInterval: Duration = .seconds(60)
    /// Pause between failed discoveries.
    public var discoveryBackoff = Backoff(initial: .seconds(1), maximum: .seconds(60))
    /// How long the watcher of a resource that left discovery may go on before it is stopped.
    /// When a CRD is deleted the server first sends a DELETED event for each of its objects and then
    /// ends the watch, and the watcher stops by itself on the 404 that follows; stopping it at once
    /// could lose those deletions.
    public var removalGrace: Duration = .seconds(30)
    /// What the supervisor and its watchers wait on (it replaces `watcher.timekeeper`).
    public var timekeeper = Timekeeper.continuous()

    public init() {}
}

/// Where a resource resumes: its checkpoint's resourceVersion and the objects emitted up to it.
public struct ResumePoint: Sendable {
    public var resourceVersion: String?
    public var known: KnownObjects

    public init(resourceVersion: String?, known: KnownObjects) {
        self.resourceVersion = resourceVersion
        self.known = known
    }
}

/// Discovers what the cluster serves, runs one `Watcher` per selected resource, and follows
/// discovery as CRDs and aggregated APIs come and go: new resources are watched within moments,
/// removed ones are stopped. A resource that fails (forbidden, unavailable) never holds up the others.
public final class InformerSupervisor: Sendable {
    let client: KubeClient
    let options: InformerOptions
    let resumePoint: @Sendable (WatchScope) async throws -> ResumePoint?
    /// The scopes the checkpoint store holds, looked at once, on the first discovery.
    let checkpointedScopes: [WatchScope]
    let logger: Logger
    public let observer: WatcherObserver
    private let state = Mutex(State())

    struct Running {
        var id: Int
        var stop: AsyncStream<Void>.Continuation
    }

    struct State {
        var running: [WatchScope: Running] = [:]
        var nextID = 0
        var discoveredOnce = false
        /// Scopes whose first list (or streaming list) is complete.
        var synced: Set<WatchScope> = []
        /// Resources watched namespace by namespace because listing them cluster-wide is forbidden.
        var perNamespace: Set<GroupVersionResource> = []
        var lastDiscoveryFailures: [DiscoveryFailure] = []
        var failure: Error?
    }

    public init(
        client: KubeClient, options: InformerOptions = InformerOptions(), observer: WatcherObserver = WatcherObserver(),
        resumePoint: @escaping @Sendable (WatchScope) async throws -> ResumePoint? = { _ in nil },
        checkpointedScopes: [WatchScope] = [],
        logger: Logger
    ) {
        self.client = client
        self.options = options
        self.observer = observer
        self.resumePoint = resumePoint
        self.checkpointedScopes = checkpointedScopes
        self.logger = logger
    }

    /// The resources being watched now.
    public var watchedResources: [GroupVersionResource] {
        Array(Set(watchedScopes.map(\.resource))).sorted()
    }

    /// The watches running now: one per resource, or one per namespace where cluster-wide is forbidden.
    public var watchedScopes: [WatchScope] {
        state.withLock { Array($0.running.keys) }.sorted()
    }

    /// Whether discovery has succeeded at least once.
    public var hasDiscovered: Bool { state.withLock { $0.discoveredOnce } }

    /// Whether every watched resource has completed its first list: the informer is ready.
    /// Forbidden or failing resources keep it from being true, so readiness checks should look at
    /// `unsyncedResources` before blocking on it.
    public var isSynced: Bool {
        state.withLock { state in state.discoveredOnce && state.running.keys.allSatisfy(state.synced.contains) }
    }

    /// Ready: discovery succeeded and every watch has either synced or been found forbidden or
    /// failing. A forbidden or unavailable resource is reported, but does not hold up readiness.
    public var isReady: Bool {
        let scopes: [WatchScope]? = state.withLock { $0.discoveredOnce ? Array($0.running.keys) : nil }
        guard let scopes else { return false }
        return scopes.allSatisfy { scope in
            switch observer.state(of: scope) {
            case nil, .starting: false
            default: true
            }
        }
    }

    /// Watches that have not completed a list yet (forbidden, failing, or still listing).
    public var unsyncedScopes: [WatchScope] {
        state.withLock { state in state.running.keys.filter { !state.synced.contains($0) } }.sorted()
    }

    /// Group versions whose discovery failed last time (an unavailable aggregated API).
    public var discoveryFailures: [DiscoveryFailure] { state.withLock { $0.lastDiscoveryFailures } }

    /// Runs until cancelled, or until `emit` throws (the consumer failed), which it rethrows.
    public func run(emit: @escaping @Sendable (ResourceEvent) async throws -> Void) async throws {
        try options.selection.validate()
        let (triggers, trigger) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await self.followDefinitions(trigger: trigger) }
            group.addTask {
                while !Task.isCancelled {
                    try? await self.options.timekeeper.sleep(self.options.rediscoveryInterval)
                    trigger.yield()
                }
            }
            var attempt = 0
            var random = SystemRandomNumberGenerator()
            let clock = options.timekeeper
            var nextTry = clock.now()
            trigger.yield()
            for await _ in triggers {
                if let failure = state.withLock({ $0.failure }) {
                    group.cancelAll()
                    throw failure
                }
                guard clock.now() >= nextTry else { continue }
                do {
                    try await reconcile(group: &group, trigger: trigger, emit: emit)
                    attempt = 0
                } catch is CancellationError {
                    break
                } catch {
                    attempt += 1
                    let pause = options.discoveryBackoff.delay(attempt: attempt, using: &random)
                    logger.warning("discovery failed: \(error); trying again in \(pause.spoken)")
                    nextTry = clock.now() + pause
                    group.addTask {
                        try? await clock.sleep(pause)
                        trigger.yield()
                    }
                }
            }
            group.cancelAll()
        }
    }

    /// Discovers, then starts watchers for new resources and stops those of removed ones.
    private func reconcile(group: inout ThrowingTaskGroup<Void, Error>, trigger: AsyncStream<Void>.Continuation,
                           emit: @escaping @Sendable (ResourceEvent) async throws -> Void) async throws {
        let discovery = try await client.discover()
        for failure in discovery.failures {
            logger.warning("discovery of \(failure.groupVersion) failed; its resources stay as they were until it answers: \(failure.message)")
        }
        let selected = options.selection.select(discovery.resources)
        let wanted = Set(selected.map(\.gvr))
        let failedGroupVersions = Set(discovery.failures.map(\.groupVersion))
        let namespaces = options.selection.literalNamespaces ?? []
        let (toStart, toStop): ([(APIResource, WatchScope)], [AsyncStream<Void>.Continuation]) = state.withLock { state in
            state.lastDiscoveryFailures = discovery.failures
            var start: [(APIResource, WatchScope)] = []
            for resource in selected {
                let scopes = state.perNamespace.contains(resource.gvr)
                    ? namespaces.map { WatchScope(resource.gvr, namespace: $0) } : [WatchScope(resource.gvr)]
                for scope in scopes where state.running[scope] == nil { start.append((resource, scope)) }
            }
            var stop: [AsyncStream<Void>.Continuation] = []
            for (scope, handle) in state.running where !wanted.contains(scope.resource) && !failedGroupVersions.contains(scope.resource.apiVersion) {
                stop.append(handle.stop)
                state.running[scope] = nil
            }
            return (start, stop)
        }
        if !toStop.isEmpty {
            let grace = options.removalGrace
            group.addTask {
                try? await self.options.timekeeper.sleep(grace)
                for handle in toStop { handle.finish() }
            }
        }
        for (resource, scope) in toStart {
            start(resource, scope: scope, group: &group, trigger: trigger, emit: emit)
        }
        let first = state.withLock { state in
            defer { state.discoveredOnce = true }
            return !state.discoveredOnce
        }
        if first {
            let removed = removedWhileAway(served: discovery.resources, failedGroupVersions: failedGroupVersions)
            if !removed.isEmpty {
                group.addTask {
                    do {
                        try await self.emitRemoval(of: removed, emit: emit)
                    } catch is CancellationError {
                    } catch {
                        self.state.withLock { $0.failure = $0.failure ?? error }
                        trigger.yield()
                    }
                }
            }
        }
        if !toStart.isEmpty || !toStop.isEmpty {
            logger.info("watching \(watchedResources.count) resources (\(toStart.count) started, \(toStop.count) stopped)")
        }
    }

    private func start(_ resource: APIResource, scope: WatchScope, group: inout ThrowingTaskGroup<Void, Error>,
                       trigger: AsyncStream<Void>.Continuation, emit: @escaping @Sendable (ResourceEvent) async throws -> Void) {
        let (stopped, stop) = AsyncStream.makeStream(of: Void.self)
        let id = state.withLock { state in
            state.nextID += 1
            state.running[scope] = Running(id: state.nextID, stop: stop)
            return state.nextID
        }
        var watcherOptions = options.watcher
        watcherOptions.timekeeper = options.timekeeper
        watcherOptions.filter = options.selection.emissionFilter
        watcherOptions.labelSelector = options.selection.labelSelector
        watcherOptions.namespace = scope.namespace
        watcherOptions.exitWhenForbidden = scope.namespace == nil && resource.namespaced && options.selection.literalNamespaces != nil
        let watcher = Watcher(resource: resource, client: client, options: watcherOptions, observer: observer, logger: logger)
        group.addTask {
            await withTaskGroup(of: Void.self) { inner in
                inner.addTask {
                    do {
                        let resume = try await self.resumePoint(scope)
                        let exit = try await watcher.run(resumeFrom: resume?.resourceVersion, known: resume?.known ?? KnownObjects()) { event in
                            if case .progress = event { self.markSynced(scope) }
                            try await emit(event)
                        }
                        guard let exit else { return }
                        self.state.withLock { state in
                            if state.running[scope]?.id == id { state.running[scope] = nil }
                            if exit == .forbiddenClusterWide { state.perNamespace.insert(resource.gvr) }
                        }
                        if exit == .forbiddenClusterWide {
                            self.logger.warning("listing \(resource.gvr) cluster-wide is forbidden; watching it in the \(self.options.selection.literalNamespaces?.count ?? 0) selected namespaces one by one instead")
                        }
                        trigger.yield()
                    } catch is CancellationError {
                    } catch {
                        // The consumer failed: the whole informer stops.
                        self.state.withLock { $0.failure = $0.failure ?? error }
                        trigger.yield()
                    }
                }
                inner.addTask { for await _ in stopped {} }
                await inner.next()
                inner.cancelAll()
            }
        }
    }

    /// Checkpointed scopes of selected resources that no version of the cluster serves any more:
    /// their CRD was deleted while kubebridge was away, and every object of them with it.
    func removedWhileAway(served: [APIResource], failedGroupVersions: Set<String>) -> [WatchScope] {
        let servedResources = Set(served.map { "\($0.gvr.resource).\($0.gvr.group)" })
        return checkpointedScopes.filter { scope in
            let gvr = scope.resource
            return !servedResources.contains("\(gvr.resource).\(gvr.group)") && !failedGroupVersions.contains(gvr.apiVersion)
                && options.selection.selects(gvr)
        }.sorted()
    }

    /// Emits the deletion of every object the checkpoints of `scopes` still know, as a watcher
    /// does when its resource goes away while it runs.
    private func emitRemoval(of scopes: [WatchScope], emit: @Sendable (ResourceEvent) async throws -> Void) async throws {
        for scope in scopes {
            guard let resume = try await resumePoint(scope), resume.known.count > 0 else { continue }
            var machine = WatcherStateMachine(scope: scope, known: resume.known, filter: options.selection.emissionFilter)
            let deletions = machine.resourceRemoved()
            logger.info("\(scope.resource) is no longer served: its CRD went away while kubebridge was not running; \(deletions.count) objects it knew are emitted as deleted")
            for event in deletions { try await emit(event) }
        }
    }

    private func markSynced(_ scope: WatchScope) {
        state.withLock { _ = $0.synced.insert(scope) }
    }

    /// Watches CustomResourceDefinitions to rediscover as soon as one changes.
    private func followDefinitions(trigger: AsyncStream<Void>.Continuation) async {
        let crds = APIResource(
            gvr: GroupVersionResource(group: "apiextensions.k8s.io", version: "v1", resource: "customresourcedefinitions"),
            kind: "CustomResourceDefinition", namespaced: false, verbs: ["list", "watch"], isPreferredVersion: true)
        var watcherOptions = options.watcher
        watcherOptions.timekeeper = options.timekeeper
        watcherOptions.labelSelector = nil
        watcherOptions.filter = WatcherStateMachine.EmissionFilter()
        // When CRDs are bridged too, their own watcher has already warned about the 403.
        let alsoBridged = options.selection.selects(crds.gvr)
        watcherOptions.forbiddenNotice = (
            level: alsoBridged ? .info : .warning,
            message: "kubebridge may not watch customresourcedefinitions, so a new CRD is found by the rediscovery every \(options.rediscoveryInterval.spoken) rather than at once, and objects made and deleted before then are never seen; grant list and watch on them (see `kubebridge rbac`)")
        let watcher = Watcher(resource: crds, client: client, options: watcherOptions, logger: logger)
        _ = try? await watcher.run { _ in trigger.yield() }
    }
}
