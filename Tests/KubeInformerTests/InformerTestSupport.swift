import BridgeCore
import Foundation
import KubeAPI
import KubeInformer
import KubeModel
import Logging
import TestSupport

/// Collects what informers emit, optionally slowly.
actor EventCollector {
    private(set) var events: [ResourceEvent] = []
    var delay: Duration?

    init(delay: Duration? = nil) {
        self.delay = delay
    }

    func emit(_ event: ResourceEvent) async {
        events.append(event)
        if let delay { try? await Task.sleep(for: delay) }
    }

    func setDelay(_ delay: Duration?) { self.delay = delay }

    func changes(_ gvr: GroupVersionResource? = nil) -> [Change] {
        events.compactMap { event in
            guard case .change(let change) = event, gvr == nil || change.resource == gvr else { return nil }
            return change
        }
    }

    /// `type name` of each change, optionally of one resource.
    func described(_ gvr: GroupVersionResource? = nil) -> [String] {
        changes(gvr).map { "\($0.type.rawValue) \($0.metadata.name)" }
    }

    func progress(_ gvr: GroupVersionResource) -> [String] {
        events.compactMap { event in
            guard case .progress(let scope, let version) = event, scope.resource == gvr else { return nil }
            return version
        }
    }

    /// The known objects as the checkpoint layer would keep them, from the changes emitted.
    func known(_ gvr: GroupVersionResource) -> KnownObjects {
        var known = KnownObjects()
        for change in changes(gvr) { known.apply(change) }
        return known
    }

    func lastVersion(_ gvr: GroupVersionResource) -> String? {
        for event in events.reversed() where event.resource == gvr {
            switch event {
            case .change(let change): return change.metadata.resourceVersion
            case .progress(_, let version): return version
            }
        }
        return nil
    }

    func reset() { events = [] }

    /// Waits until `condition` holds for the events collected.
    nonisolated func wait(timeout: Duration = .seconds(60), _ condition: @escaping @Sendable ([ResourceEvent]) -> Bool) async throws {
        try await waitUntil(timeout: timeout) { condition(await self.events) }
    }

    /// Waits until the resource's first list is complete (its first progress event).
    nonisolated func waitUntilListed(_ gvr: GroupVersionResource, timeout: Duration = .seconds(60)) async throws {
        try await waitUntil(timeout: timeout) { await !self.progress(gvr).isEmpty }
    }

    nonisolated func waitForChanges(_ count: Int, of gvr: GroupVersionResource? = nil, timeout: Duration = .seconds(60)) async throws {
        try await waitUntil(timeout: timeout) { await self.changes(gvr).count >= count }
    }
}

extension Logger {
    static let test: Logger = {
        var logger = Logger(label: "kubebridge.test")
        logger.logLevel = ProcessInfo.processInfo.environment["KUBEBRIDGE_TEST_LOG"] == nil ? .critical : .debug
        return logger
    }()
}

extension APIResource {
    static let configmaps = APIResource(gvr: TestCluster.configmaps, kind: "ConfigMap", namespaced: true,
                                        verbs: ["list", "watch"], isPreferredVersion: true)
}

/// A watcher running in a task, stopped and awaited by `stop()`.
struct RunningWatcher {
    let task: Task<WatcherExit?, Error>

    init(_ watcher: Watcher, resumeFrom: String? = nil, known: KnownObjects = KnownObjects(), collector: EventCollector) {
        task = Task { try await watcher.run(resumeFrom: resumeFrom, known: known) { await collector.emit($0) } }
    }

    func stop() async {
        task.cancel()
        _ = try? await task.value
    }
}

extension WatcherOptions {
    /// Fast retries for tests.
    static func test(streaming: Bool = false) -> WatcherOptions {
        var options = WatcherOptions()
        options.useStreamingLists = streaming
        options.backoff = Backoff(initial: .milliseconds(50), maximum: .milliseconds(200))
        options.forbiddenRetry = .milliseconds(300)
        return options
    }
}
