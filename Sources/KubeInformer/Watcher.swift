import CoreMetrics
import KubeAPI
import KubeModel
import Logging
import Synchronization

/// How a watcher behaves; the defaults follow client-go's reflector.
public struct WatcherOptions: Sendable {
    /// List page size.
    public var pageSize = 500
    /// Try streaming lists (`sendInitialEvents`) first; a server that refuses gets paginated lists.
    public var useStreamingLists = true
    /// The server ends each watch after a random time in this range, spreading reconnects.
    public var watchTimeoutSeconds: ClosedRange<Int> = 300...600
    /// Server-side label selector.
    public var labelSelector: String?
    /// Watch one namespace instead of the whole cluster (the fallback when listing cluster-wide is forbidden).
    public var namespace: String?
    /// End with `.forbiddenClusterWide` on a 403 of a cluster-wide watch, so that the supervisor
    /// can watch the selected namespaces one by one instead.
    public var exitWhenForbidden = false
    public var backoff = Backoff()
    /// Pause after a 403 before trying again.
    public var forbiddenRetry: Duration = .seconds(300)
    /// What the first 403 logs in place of the general warning, for a watch whose purpose the
    /// general sentence would not name (the supervisor's watch of CRDs).
    public var forbiddenNotice: (level: Logger.Level, message: String)?
    /// The longest Retry-After honoured; a larger one is cut to this.
    public var maximumRetryAfter: Duration = .seconds(600)
    public var filter = WatcherStateMachine.EmissionFilter()
    /// What the watcher waits on between tries (backoff, Retry-After, after a 403).
    public var timekeeper = Timekeeper.continuous()

    public init() {}
}

/// Why a watcher stopped on its own.
public enum WatcherExit: Sendable, Equatable {
    /// The resource is no longer served (its CRD was deleted, or an aggregated API went away).
    case resourceRemoved
    /// Listing the resource cluster-wide is forbidden (with `exitWhenForbidden`).
    case forbiddenClusterWide
}

/// Follows one resource: lists, watches, relists after 410, reconnects after failures, and hands
/// every change to `emit`. The next line is read only after `emit` returned, so a slow consumer
/// slows the reads and TCP slows the API server: nothing is buffered in between.
public struct Watcher: Sendable {
    public let resource: APIResource
    let client: KubeClient
    let options: WatcherOptions
    let logger: Logger
    let observer: WatcherObserver

    public init(resource: APIResource, client: KubeClient, options: WatcherOptions = WatcherOptions(),
                observer: WatcherObserver = WatcherObserver(), logger: Logger) {
        self.resource = resource
        self.client = client
        self.options = options
        self.observer = observer
        var logger = logger
        logger[metadataKey: "gvr"] = "\(resource.gvr)"
        if let namespace = options.namespace { logger[metadataKey: "namespace"] = "\(namespace)" }
        self.logger = logger
    }

    /// What this watcher follows.
    var scope: WatchScope { WatchScope(resource.gvr, namespace: options.namespace) }

    /// Runs until the task is cancelled (returns nil) or the resource goes away.
    public func run(
        resumeFrom resourceVersion: String? = nil, known: KnownObjects = KnownObjects(),
        emit: @escaping @Sendable (ResourceEvent) async throws -> Void
    ) async throws -> WatcherExit? {
        var machine = WatcherStateMachine(scope: WatchScope(resource.gvr, namespace: options.namespace), known: known,
                                          useStreamingLists: options.useStreamingLists, filter: options.filter)
        var random = SystemRandomNumberGenerator()
        var action = machine.start(resumeFrom: resourceVersion)
        var warnedForbidden = false
        let scope = machine.scope
        // A list after the first, or any list of a watcher that resumed from a checkpoint, is a relist.
        var lists = resourceVersion == nil ? 0 : 1
        func listing() {
            lists += 1
            if lists > 1 { observer.record(.relisted, scope: scope) }
        }
        observer.setState(resourceVersion == nil ? .starting : .watching, of: scope)
        let emit: @Sendable (ResourceEvent) async throws -> Void = { event in
            if case .progress = event { observer.setState(.watching, of: scope) }
            try await emit(event)
        }
        while !Task.isCancelled {
            switch action {
            case .list(let token):
                if token == nil { listing() }
                do {
                    let page = try await client.list(resource.gvr, namespace: options.namespace, options: ListOptions(
                        limit: options.pageSize, continueToken: token, labelSelector: options.labelSelector))
                    let (events, next) = machine.pageReceived(page)
                    for event in events { try await emit(event) }
                    if token == nil { observer.record(.listed, scope: scope) }
                    action = next
                } catch let error as KubeAPIError {
                    action = machine.failed(error)
                    report(error, during: "list")
                }
            case .watch(let version):
                action = try await stream(&machine, options: WatchOptions(
                    resourceVersion: version, timeoutSeconds: Int.random(in: options.watchTimeoutSeconds, using: &random),
                    labelSelector: options.labelSelector), emit: emit)
            case .streamingList:
                listing()
                action = try await stream(&machine, options: WatchOptions(
                    resourceVersionMatch: "NotOlderThan", timeoutSeconds: Int.random(in: options.watchTimeoutSeconds, using: &random),
                    sendInitialEvents: true, labelSelector: options.labelSelector), emit: emit)
            case .wait(let reason):
                let pause: Duration
                switch reason {
                case .backoff(let attempt):
                    pause = options.backoff.delay(attempt: attempt, using: &random)
                    observer.setState(.retrying(observer.lastFailure(of: scope) ?? "attempt \(attempt)"), of: scope)
                case .retryAfter(let after, _):
                    pause = min(after, options.maximumRetryAfter)
                    observer.setState(.retrying("throttled"), of: scope)
                case .forbidden:
                    if options.exitWhenForbidden, options.namespace == nil {
                        return .forbiddenClusterWide
                    }
                    pause = options.forbiddenRetry
                    observer.setState(.forbidden, of: scope)
                    if !warnedForbidden {
                        if let notice = options.forbiddenNotice {
                            logger.log(level: notice.level, "\(notice.message)")
                        } else {
                            logger.warning("forbidden: kubebridge may not list or watch \(resource.gvr); other resources go on. Grant list and watch (see `kubebridge rbac`); retrying every \(options.forbiddenRetry.spoken)")
                        }
                        warnedForbidden = true
                    }
                    observer.record(.forbidden, scope: scope)
                }
                try await options.timekeeper.sleep(pause)
                action = machine.waited()
            case .stop:
                observer.setState(.removed, of: scope)
                let deletions = machine.resourceRemoved()
                for event in deletions { try await emit(event) }
                logger.info("the resource is no longer served; its watcher stops (\(deletions.count) objects it still knew were emitted as deleted)")
                return .resourceRemoved
            }
        }
        return nil
    }

    /// Reads one watch stream to its end.
    private func stream(
        _ machine: inout WatcherStateMachine, options watchOptions: WatchOptions, emit: @Sendable (ResourceEvent) async throws -> Void
    ) async throws -> WatcherStateMachine.Action {
        do {
            let stream = try await client.watch(resource.gvr, namespace: options.namespace, options: watchOptions)
            observer.record(.watchStarted, scope: scope)
            // A watch answered after failures is following changes again (a streaming list is not
            // until its initial events have come).
            if watchOptions.sendInitialEvents != true, case .retrying = observer.state(of: scope) {
                observer.setState(.watching, of: scope)
            }
            for try await frame in stream {
                let (events, outcome) = machine.frameReceived(frame)
                for event in events { try await emit(event) }
                if case .stopReading(let next) = outcome {
                    if case .error(let status) = frame {
                        observer.record(status.code == 410 ? .restarted(.gone) : .restarted(.error), scope: scope)
                        logger.info("watch ended with \(status.code ?? 0) \(status.reason ?? ""): \(status.message ?? "")")
                    }
                    return next
                }
            }
            observer.record(.restarted(.timeout), scope: scope)
            return machine.streamEnded()
        } catch let error as KubeAPIError {
            report(error, during: "watch")
            observer.record(.restarted(error.isGone ? .gone : error.code == .timeout ? .stalled : .error), scope: scope)
            return machine.failed(error)
        }
    }

    private func report(_ error: KubeAPIError, during phase: String) {
        if error.isForbidden { return }
        observer.setLastFailure("\(phase): \(error.message)", of: scope)
        switch error.code {
        case .malformedResponse, .lineTooLong:
            observer.record(.malformedStream, scope: scope)
            logger.error("\(phase) of \(resource.gvr) failed: \(error); restarting from the last good resourceVersion")
        default:
            if error.isGone {
                logger.info("\(phase) of \(resource.gvr): resourceVersion expired (410); relisting")
            } else if error.httpStatus == 429 {
                // Every new CRD answers this for a second or two while its storage starts.
                logger.info("\(phase) of \(resource.gvr) throttled: \(error)")
            } else if error.code == .timeout {
                logger.warning("\(phase) of \(resource.gvr) stalled: nothing arrived within the idle timeout; reconnecting")
            } else {
                logger.warning("\(phase) of \(resource.gvr) failed: \(error)")
            }
        }
    }
}

/// Where a watch stands, for readiness and status.
public enum WatchState: Sendable, Equatable {
    /// Its first list has not finished.
    case starting
    /// Synced: listed, and following changes.
    case watching
    /// Forbidden; retried on a long period.
    case forbidden
    /// Failing; retried with backoff.
    case retrying(String)
    /// The resource is not served any more.
    case removed
}

/// What watchers report for metrics, status and tests: counts by kind of occurrence, and each
/// watch's state.
public final class WatcherObserver: Sendable {
    public enum Occurrence: Hashable, Sendable {
        public enum RestartReason: String, Sendable {
            case gone, timeout, stalled, error
        }

        case listed
        case relisted
        case watchStarted
        case restarted(RestartReason)
        case forbidden
        case malformedStream
    }

    private let counts = Mutex<[Occurrence: Int]>([:])
    private let stateTable = Mutex<[WatchScope: WatchState]>([:])
    private let failures = Mutex<[WatchScope: String]>([:])

    public init() {}

    func setLastFailure(_ failure: String, of scope: WatchScope) {
        failures.withLock { $0[scope] = failure }
    }

    /// The last error of a watch, as a sentence; kept after it recovers, for `/status`.
    public func lastFailure(of scope: WatchScope) -> String? {
        failures.withLock { $0[scope] }
    }

    func setState(_ state: WatchState, of scope: WatchScope) {
        stateTable.withLock { $0[scope] = state }
    }

    public func state(of scope: WatchScope) -> WatchState? {
        stateTable.withLock { $0[scope] }
    }

    func record(_ occurrence: Occurrence, scope: WatchScope) {
        counts.withLock { $0[occurrence, default: 0] += 1 }
        switch occurrence {
        case .restarted(let reason):
            Counter(label: MetricName.watchRestarts, dimensions: [("resource", scope.resource.metricLabel), ("reason", reason.rawValue)]).increment()
        case .relisted:
            Counter(label: MetricName.relists, dimensions: [("resource", scope.resource.metricLabel)]).increment()
        case .malformedStream:
            Counter(label: MetricName.watchRestarts, dimensions: [("resource", scope.resource.metricLabel), ("reason", "malformed")]).increment()
        case .listed, .watchStarted, .forbidden:
            break
        }
    }

    /// Every watch's state now.
    public var states: [WatchScope: WatchState] {
        stateTable.withLock { $0 }
    }

    public func count(_ occurrence: Occurrence) -> Int {
        counts.withLock { $0[occurrence] ?? 0 }
    }
}
