import BridgeCore
import Foundation
import KubeAPI
import KubeInformer
import KubeModel
import KubeTestServer
import Testing
import TestSupport

/// Each watch rule against the test API server over real sockets.
@Suite("Watcher against the test API server")
struct WatcherTests {
    static let cm = TestCluster.configmaps

    func createConfigMaps(_ cluster: TestCluster, _ names: [String], namespace: String = "default") async throws {
        for name in names {
            let (status, body) = try await cluster.server.perform("POST", "/api/v1/namespaces/\(namespace)/configmaps",
                                                                  body: #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"\#(name)"},"data":{"v":"1"}}"#)
            #expect(status == 201, "\(body)")
        }
    }

    func patch(_ cluster: TestCluster, _ name: String, _ value: String, namespace: String = "default") async throws {
        let (status, _) = try await cluster.server.perform("PATCH", "/api/v1/namespaces/\(namespace)/configmaps/\(name)",
                                                           body: #"{"data":{"v":"\#(value)"}}"#, contentType: "application/merge-patch+json")
        #expect(status == 200)
    }

    func delete(_ cluster: TestCluster, _ name: String, namespace: String = "default") async throws {
        let (status, _) = try await cluster.server.perform("DELETE", "/api/v1/namespaces/\(namespace)/configmaps/\(name)")
        #expect(status == 200)
    }

    /// Starts a watcher of ConfigMaps and waits until it has listed and its watch is open at the
    /// server, so that a fault installed next applies to the reconnection and not to a watch still
    /// on its way.
    func watchConfigMaps(_ cluster: TestCluster, observer: WatcherObserver = WatcherObserver(),
                         options: WatcherOptions = .test()) async throws -> (EventCollector, RunningWatcher) {
        let collector = EventCollector()
        let watcher = RunningWatcher(Watcher(resource: .configmaps, client: cluster.client, options: options, observer: observer, logger: .test),
                                     collector: collector)
        try await collector.wait { !$0.isEmpty }
        try await waitUntil { try await cluster.server.openWatchCount() >= 1 }
        return (collector, watcher)
    }

    @Test("rule 1: without a stored version, paginated lists of 500, then a watch from the list's version")
    func listThenWatch() async throws {
        try await TestCluster.with { cluster in
            try await createConfigMaps(cluster, (0..<1100).map { "cm-\($0)" })
            let collector = EventCollector()
            let watcher = RunningWatcher(Watcher(resource: .configmaps, client: cluster.client, options: .test(), logger: .test), collector: collector)
            try await collector.waitForChanges(1100)
            try await createConfigMaps(cluster, ["late"])
            try await patch(cluster, "late", "2")
            try await delete(cluster, "late")
            try await collector.waitForChanges(1103)
            await watcher.stop()
            let described = await collector.described()
            #expect(described.prefix(1100).allSatisfy { $0.hasPrefix("synced cm-") })
            #expect(Array(described.suffix(3)) == ["added late", "modified late", "deleted late"])
            let log = try await cluster.server.requestLog().filter { $0.contains("/configmaps") }
            let lists = log.filter { $0.hasPrefix("GET /api/v1/configmaps?") && !$0.contains("watch=true") }
            #expect(lists.count == 3)
            #expect(lists.allSatisfy { $0.contains("limit=500") })
            #expect(lists.dropFirst().allSatisfy { $0.contains("continue=") })
            let watch = try #require(log.first { $0.contains("watch=true") })
            #expect(watch.contains("allowWatchBookmarks=true"))
            let listVersion = try #require(await collector.progress(Self.cm).first)
            #expect(watch.contains("resourceVersion=\(listVersion)&"))
        }
    }

    @Test("rule 1: a stored resourceVersion is watched from directly, with no list")
    func resumeFromStoredVersion() async throws {
        try await TestCluster.with { cluster in
            try await createConfigMaps(cluster, ["before"])
            let version = try await cluster.server.currentResourceVersion()
            try await createConfigMaps(cluster, ["after"])
            let collector = EventCollector()
            let watcher = RunningWatcher(Watcher(resource: .configmaps, client: cluster.client, options: .test(), logger: .test),
                                         resumeFrom: version, collector: collector)
            try await collector.waitForChanges(1)
            await watcher.stop()
            let observed1 = await collector.described()
            #expect(observed1 == ["added after"])
            let log = try await cluster.server.requestLog().filter { $0.contains("/configmaps") }
            #expect(log.allSatisfy { $0.contains("watch=true") })
        }
    }

    @Test("rule 1: streaming lists where the server offers them, paginated lists where it refuses", arguments: [true, false])
    func streamingLists(serverOffers: Bool) async throws {
        var options = KubeTestServer.Options()
        options.watchListEnabled = serverOffers
        try await TestCluster.with(options) { cluster in
            try await createConfigMaps(cluster, ["a", "b"])
            let collector = EventCollector()
            let watcher = RunningWatcher(Watcher(resource: .configmaps, client: cluster.client, options: .test(streaming: true), logger: .test),
                                         collector: collector)
            try await collector.waitForChanges(2)
            try await createConfigMaps(cluster, ["c"])
            try await collector.waitForChanges(3)
            await watcher.stop()
            let observed2 = await collector.described()
            #expect(observed2 == ["synced a", "synced b", "added c"])
            let log = try await cluster.server.requestLog().filter { $0.contains("/configmaps") }
            #expect(log.first?.contains("sendInitialEvents=true") == true)
            #expect(log.contains { $0.contains("limit=500") } == !serverOffers)
        }
    }

    @Test("rule 2: bookmarks advance the version of a quiet resource, with no change emitted")
    func bookmarks() async throws {
        var options = KubeTestServer.Options()
        options.bookmarkInterval = .milliseconds(300)
        try await TestCluster.with(options) { cluster in
            let collector = EventCollector()
            let watcher = RunningWatcher(Watcher(resource: .configmaps, client: cluster.client, options: .test(), logger: .test), collector: collector)
            try await collector.wait { !$0.isEmpty }
            let listed = try #require(await collector.progress(Self.cm).first)
            // Writes elsewhere move the cluster's version; the quiet resource hears of it by bookmark.
            _ = try await cluster.server.perform("POST", "/api/v1/namespaces", body: #"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"elsewhere"}}"#)
            let current = try await cluster.server.currentResourceVersion()
            try await collector.wait { events in
                events.contains { if case .progress(_, let version) = $0 { return version == current }; return false }
            }
            await watcher.stop()
            let observed3 = await collector.changes().isEmpty
            #expect(observed3)
            #expect(listed != current)
        }
    }

    @Test("rule 3 and done-when: a compaction while disconnected yields exactly the differences, as synced and deleted")
    func compactionWhileDisconnected() async throws {
        try await TestCluster.with { cluster in
            try await createConfigMaps(cluster, ["same", "changed", "gone", "recreated"])
            let first = EventCollector()
            let watcher = RunningWatcher(Watcher(resource: .configmaps, client: cluster.client, options: .test(), logger: .test), collector: first)
            try await first.waitForChanges(4)
            await watcher.stop()
            let known = await first.known(Self.cm)
            let version = try #require(await first.lastVersion(Self.cm))
            let oldRecreatedUID = try #require(known.entries.first { $0.value.name == "recreated" }?.key)

            // While nobody watches:
            try await patch(cluster, "changed", "2")
            try await delete(cluster, "gone")
            try await delete(cluster, "recreated")
            try await createConfigMaps(cluster, ["recreated", "new"])
            try await cluster.server.compact()

            let second = EventCollector()
            let resumed = RunningWatcher(Watcher(resource: .configmaps, client: cluster.client, options: .test(), logger: .test),
                                         resumeFrom: version, known: known, collector: second)
            try await second.waitForChanges(5)
            try await Task.sleep(for: .milliseconds(200))
            await resumed.stop()
            let changes = await second.changes()
            #expect(changes.map { "\($0.type.rawValue) \($0.metadata.name)" }.sorted() ==
                    ["deleted gone", "deleted recreated", "synced changed", "synced new", "synced recreated"])
            let deletedRecreated = try #require(changes.first { $0.type == .deleted && $0.metadata.name == "recreated" })
            #expect(deletedRecreated.metadata.uid == oldRecreatedUID)
            #expect(deletedRecreated.finalStateUnknown)
            let syncedRecreated = try #require(changes.firstIndex { $0.type == .synced && $0.metadata.name == "recreated" })
            let deletedIndex = try #require(changes.firstIndex { $0.type == .deleted && $0.metadata.name == "recreated" })
            #expect(deletedIndex < syncedRecreated, "the old object's deletion comes before the new one")
            #expect(!changes.contains { $0.type == .modified })
        }
    }

    @Test("rule 5: 403 is waited out at length while access is missing, and recovers when granted")
    func forbidden() async throws {
        try await TestCluster.with(user: .token("limited")) { cluster in
            try await cluster.server.addUser(TestUser(name: "limited", token: "limited") { _, definition, _ in definition.resource != "configmaps" })
            try await createConfigMaps(cluster, ["a"])
            let collector = EventCollector()
            let observer = WatcherObserver()
            let watcher = RunningWatcher(Watcher(resource: .configmaps, client: cluster.client, options: .test(), observer: observer, logger: .test),
                                         collector: collector)
            try await waitUntil { observer.count(.forbidden) >= 2 }
            let observed4 = await collector.events.isEmpty
            #expect(observed4)
            try await cluster.server.addUser(.admin(token: "limited"))
            try await collector.waitForChanges(1)
            await watcher.stop()
            let observed5 = await collector.described()
            #expect(observed5 == ["synced a"])
        }
    }

    @Test("rule 5: 429 waits as long as Retry-After says (cut to maximumRetryAfter) on the watcher's clock, and resumes the watch without relisting",
          arguments: [(7, 7), (900, 600)])
    func throttled(retryAfter: Int, waited: Int) async throws {
        try await TestCluster.with { cluster in
            let clock = ManualClock()
            var options = WatcherOptions.test()
            options.timekeeper = Timekeeper(clock)
            let (collector, watcher) = try await watchConfigMaps(cluster, options: options)
            try await cluster.server.inject(FaultRule(verbs: [.watch], resource: "configmaps", action: .tooManyRequests(retryAfterSeconds: retryAfter), count: 1))
            try await cluster.server.endAllWatches()
            try await clock.waitForSleepers()
            #expect(clock.requestedSleeps == [.seconds(waited)])
            try await createConfigMaps(cluster, ["during"])
            clock.advance(by: .seconds(waited) - .milliseconds(1))
            #expect(clock.sleeping == 1, "still waiting a millisecond before")
            clock.advance(by: .milliseconds(1))
            try await collector.waitForChanges(1)
            await watcher.stop()
            let lists = try await cluster.server.requestLog().filter { $0.contains("/configmaps") && !$0.contains("watch=true") }
            #expect(lists.count == 1, "no relist: \(lists)")
            let observed6 = await collector.described()
            #expect(observed6 == ["added during"])
        }
    }

    @Test("rule 5: server errors and dropped connections back off and resume from the last version, losing nothing")
    func serverErrors() async throws {
        try await TestCluster.with { cluster in
            let (collector, watcher) = try await watchConfigMaps(cluster)
            try await cluster.server.inject(FaultRule(verbs: [.watch], action: .status(code: 500, reason: "InternalError", message: "etcd hiccup"), count: 2))
            try await cluster.server.inject(FaultRule(verbs: [.watch], action: .dropConnection, count: 1))
            try await cluster.server.endAllWatches()
            try await createConfigMaps(cluster, (0..<20).map { "cm-\($0)" })
            try await collector.waitForChanges(20)
            await watcher.stop()
            let described = await collector.described()
            #expect(described == (0..<20).map { "added cm-\($0)" })
        }
    }

    @Test("rule 6 and done-when: a stream cut mid-line or a malformed line restarts from the last good version; nothing is lost or repeated",
          arguments: [FaultAction.cutWatchMidLine(afterEvents: 3, cleanEnd: false), .cutWatchMidLine(afterEvents: 3, cleanEnd: true),
                      .malformedWatchLine(afterEvents: 3)])
    func brokenStreams(fault: FaultAction) async throws {
        try await TestCluster.with { cluster in
            let observer = WatcherObserver()
            let (collector, watcher) = try await watchConfigMaps(cluster, observer: observer)
            try await cluster.server.inject(FaultRule(verbs: [.watch], resource: "configmaps", action: fault, count: 1))
            try await cluster.server.endAllWatches()
            try await Task.sleep(for: .milliseconds(100))
            try await createConfigMaps(cluster, (0..<10).map { "cm-\($0)" })
            try await collector.waitForChanges(10)
            try await Task.sleep(for: .milliseconds(200))
            await watcher.stop()
            let described = await collector.described()
            #expect(described == (0..<10).map { "added cm-\($0)" })
            if case .malformedWatchLine = fault { #expect(observer.count(.malformedStream) == 1) }
        }
    }

    @Test("rule 7: a watch that goes silent is noticed and restarted from its last version")
    func stalledWatch() async throws {
        try await TestCluster.with(configure: { $0.idleReadTimeout = .milliseconds(700) }) { cluster in
            let observer = WatcherObserver()
            let (collector, watcher) = try await watchConfigMaps(cluster, observer: observer)
            try await cluster.server.inject(FaultRule(verbs: [.watch], resource: "configmaps", action: .stallWatch, count: 1))
            try await cluster.server.endAllWatches()
            try await Task.sleep(for: .milliseconds(100))
            try await createConfigMaps(cluster, ["while-stalled"])
            try await collector.waitForChanges(1)
            await watcher.stop()
            #expect(observer.count(.restarted(.stalled)) >= 1)
            let observed7 = await collector.described()
            #expect(observed7 == ["added while-stalled"])
        }
    }

    @Test("a resource whose CRD is deleted: the deletions arrive, then the watcher stops")
    func crdDeleted() async throws {
        try await TestCluster.with { cluster in
            try await cluster.installWidgetCRD()
            for name in ["w1", "w2"] {
                _ = try await cluster.client.create(TestCluster.widgets, namespace: "default",
                                                    json: #"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"\#(name)"}}"#)
            }
            let widgets = APIResource(gvr: TestCluster.widgets, kind: "Widget", namespaced: true, verbs: ["list", "watch"], isPreferredVersion: true)
            let collector = EventCollector()
            let watcher = RunningWatcher(Watcher(resource: widgets, client: cluster.client, options: .test(), logger: .test), collector: collector)
            try await collector.waitForChanges(2)
            try await cluster.client.delete(TestCluster.crds, namespace: nil, name: "widgets.example.com")
            let exit = try await watcher.task.value
            #expect(exit == .resourceRemoved)
            let observed8 = await collector.described()
            #expect(observed8 == ["synced w1", "synced w2", "deleted w1", "deleted w2"])
        }
    }
}
