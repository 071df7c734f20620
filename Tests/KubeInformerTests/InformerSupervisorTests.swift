import BridgeCore
import Foundation
import KubeAPI
import KubeInformer
import KubeModel
import KubeTestServer
import Logging
import Testing
import TestSupport

@Suite("Resource selection")
struct ResourceSelectionTests {
    static func resource(_ gvr: String, preferred: Bool = true, verbs: [String] = ["list", "watch"]) -> APIResource {
        APIResource(gvr: GroupVersionResource(gvr)!, kind: "K", namespaced: true, verbs: verbs, isPreferredVersion: preferred)
    }

    static let cluster = [
        resource("core/v1/configmaps"), resource("core/v1/events"), resource("events.k8s.io/v1/events"),
        resource("coordination.k8s.io/v1/leases"), resource("apps/v1/deployments"), resource("autoscaling/v2/horizontalpodautoscalers"),
        resource("autoscaling/v1/horizontalpodautoscalers", preferred: false), resource("authentication.k8s.io/v1/tokenreviews", verbs: ["create"]),
        resource("example.com/v1/widgets"), resource("stable.example.com/v1beta1/gadgets"),
    ]

    @Test("patterns, preferred versions, watchability, default exclusions and aliases", arguments: [
        (["*/*/*"], [], ["apps/v1/deployments", "autoscaling/v2/horizontalpodautoscalers", "core/v1/configmaps", "example.com/v1/widgets", "stable.example.com/v1beta1/gadgets"]),
        (["*"], ["apps/*/*"], ["autoscaling/v2/horizontalpodautoscalers", "core/v1/configmaps", "example.com/v1/widgets", "stable.example.com/v1beta1/gadgets"]),
        (["*.example.com/*/*"], [], ["stable.example.com/v1beta1/gadgets"]),
        (["*example.com/*/*"], [], ["example.com/v1/widgets", "stable.example.com/v1beta1/gadgets"]),
        (["*/*/*", "core/v1/events"], [], ["apps/v1/deployments", "autoscaling/v2/horizontalpodautoscalers", "core/v1/configmaps", "core/v1/events", "example.com/v1/widgets", "stable.example.com/v1beta1/gadgets"]),
        (["core/v1/events", "events.k8s.io/v1/events"], [], ["core/v1/events"]),
        (["events.k8s.io/v1/events", "coordination.k8s.io/v1/leases"], [], ["coordination.k8s.io/v1/leases", "events.k8s.io/v1/events"]),
        (["autoscaling/v1/horizontalpodautoscalers", "authentication.k8s.io/*/*"], [], []),
    ])
    func select(include: [String], exclude: [String], expected: [String]) throws {
        var selection = ResourceSelection()
        selection.include = include
        selection.exclude = exclude
        try selection.validate()
        #expect(selection.select(Self.cluster).map(\.gvr.description).sorted() == expected)
    }

    @Test("a bad pattern is named in the error")
    func badPattern() {
        var selection = ResourceSelection()
        selection.include = ["apps/deployments"]
        let error = #expect(throws: KubeConfigError.self) { try selection.validate() }
        #expect(error?.message.contains("\"apps/deployments\"") == true)
    }

    @Test("namespace filters apply to namespaced objects only")
    func namespaces() {
        var selection = ResourceSelection()
        selection.includeNamespaces = ["team-*", "default"]
        selection.excludeNamespaces = ["team-secret"]
        #expect(selection.accepts(namespace: "team-a"))
        #expect(selection.accepts(namespace: "default"))
        #expect(!selection.accepts(namespace: "team-secret"))
        #expect(!selection.accepts(namespace: "kube-system"))
        #expect(selection.accepts(namespace: nil))
        #expect(selection.literalNamespaces == nil)
        selection.includeNamespaces = ["a", "b"]
        #expect(selection.literalNamespaces == ["a", "b"])
    }
}

@Suite("Informer supervisor against the test API server")
struct InformerSupervisorTests {
    static func options(_ configure: (inout InformerOptions) -> Void = { _ in }) -> InformerOptions {
        var options = InformerOptions()
        options.watcher = .test()
        options.removalGrace = .seconds(2)
        options.discoveryBackoff = Backoff(initial: .milliseconds(100), maximum: .milliseconds(500))
        configure(&options)
        return options
    }

    /// Runs a supervisor for the duration of `body`.
    func withSupervisor(
        _ cluster: TestCluster, options: InformerOptions, collector: EventCollector, logger: Logger = .test,
        _ body: (InformerSupervisor) async throws -> Void
    ) async throws {
        let supervisor = InformerSupervisor(client: cluster.client, options: options, logger: logger)
        let task = Task { try await supervisor.run { await collector.emit($0) } }
        do {
            // Legacy discovery is one TLS request per group version: a loaded machine (the whole
            // suite runs in parallel) can take seconds over it.
            try await waitUntil(timeout: .seconds(30)) { supervisor.hasDiscovered }
            try await body(supervisor)
        } catch {
            task.cancel()
            _ = try? await task.value
            throw error
        }
        task.cancel()
        _ = try? await task.value
    }

    @Test("done-when: a CRD created while running is watched at once (the CRD watch, not the periodic rediscovery, finds it); deleting it stops the watcher after its deletions")
    func crdComesAndGoes() async throws {
        try await TestCluster.with { cluster in
            let collector = EventCollector()
            // Rediscovery on a timer would come too late to pass: only the CRD watch can.
            let options = Self.options { $0.rediscoveryInterval = .seconds(3600) }
            try await withSupervisor(cluster, options: options, collector: collector) { supervisor in
                #expect(!supervisor.watchedResources.contains(TestCluster.widgets))
                _ = try await cluster.client.create(TestCluster.crds, namespace: nil, json: TestCluster.widgetCRD)
                try await waitUntil(timeout: .seconds(60)) {
                    if (try? await cluster.client.discover().resources.contains { $0.gvr == TestCluster.widgets }) == true {
                        _ = try? await cluster.client.create(TestCluster.widgets, namespace: "default",
                                                             json: #"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w1"}}"#)
                        return true
                    }
                    return false
                }
                try await collector.waitForChanges(1, of: TestCluster.widgets, timeout: .seconds(60))
                #expect(supervisor.watchedResources.contains(TestCluster.widgets))

                try await cluster.client.delete(TestCluster.crds, namespace: nil, name: "widgets.example.com")
                try await waitUntil(timeout: .seconds(60)) { !supervisor.watchedResources.contains(TestCluster.widgets) }
                let widgetChanges = await collector.described(TestCluster.widgets)
                #expect(widgetChanges.last == "deleted w1")
            }
        }
    }

    @Test("a CRD deleted while kubebridge was away: the objects its checkpoint knew are emitted as deleted, unless the selection leaves the resource out")
    func crdRemovedWhileAway() async throws {
        try await TestCluster.with { cluster in
            _ = try await cluster.client.create(TestCluster.crds, namespace: nil, json: TestCluster.widgetCRD)
            try await waitUntil(timeout: .seconds(60)) {
                (try? await cluster.client.discover().resources.contains { $0.gvr == TestCluster.widgets }) == true
            }
            for name in ["w1", "w2"] {
                _ = try await cluster.client.create(TestCluster.widgets, namespace: "default",
                                                    json: #"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"\#(name)"}}"#)
            }
            let before = EventCollector()
            let onlyWidgets = Self.options { $0.selection.include = ["example.com/*/*"] }
            try await withSupervisor(cluster, options: onlyWidgets, collector: before) { _ in
                try await before.waitUntilListed(TestCluster.widgets)
            }
            let resume = ResumePoint(resourceVersion: await before.lastVersion(TestCluster.widgets), known: await before.known(TestCluster.widgets))
            #expect(resume.known.count == 2)
            try await cluster.client.delete(TestCluster.crds, namespace: nil, name: "widgets.example.com")
            try await waitUntil(timeout: .seconds(60)) {
                (try? await cluster.client.discover().resources.contains { $0.gvr == TestCluster.widgets }) == false
            }

            for (include, expected) in [(["*/*/*"], ["deleted w1", "deleted w2"]), (["core/v1/configmaps"], [])] {
                let after = EventCollector()
                let options = Self.options { $0.selection.include = include }
                let supervisor = InformerSupervisor(client: cluster.client, options: options, resumePoint: { scope in
                    scope.resource == TestCluster.widgets ? resume : nil
                }, checkpointedScopes: [WatchScope(TestCluster.widgets)], logger: .test)
                let task = Task { try await supervisor.run { await after.emit($0) } }
                try await waitUntil(timeout: .seconds(30)) { supervisor.hasDiscovered }
                if expected.isEmpty {
                    try await Task.sleep(for: .milliseconds(500))
                } else {
                    try await after.waitForChanges(expected.count, of: TestCluster.widgets)
                }
                task.cancel()
                _ = try? await task.value
                let changes = await after.changes(TestCluster.widgets)
                #expect(changes.map { "\($0.type) \($0.metadata.name)" } == expected, "include \(include)")
                #expect(changes.allSatisfy { $0.finalStateUnknown })
                #expect(!supervisor.watchedResources.contains(TestCluster.widgets))
            }
        }
    }

    @Test("one watch per resource, cluster-wide, whatever the namespace filter; the filter applies to the stream")
    func namespaceFilterOnTheStream() async throws {
        try await TestCluster.with { cluster in
            let teams = (0..<30).map { "team-\($0)" }
            for namespace in teams + ["other"] {
                _ = try await cluster.server.perform("POST", "/api/v1/namespaces", body: #"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"\#(namespace)"}}"#)
            }
            let collector = EventCollector()
            let options = Self.options {
                $0.selection.include = ["core/v1/configmaps"]
                $0.selection.includeNamespaces = teams
            }
            try await withSupervisor(cluster, options: options, collector: collector) { supervisor in
                try await collector.waitUntilListed(TestCluster.configmaps)
                for namespace in ["team-3", "other", "team-29"] {
                    _ = try await cluster.server.perform("POST", "/api/v1/namespaces/\(namespace)/configmaps",
                                                         body: #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm"}}"#)
                }
                // One stream, in order: once team-29's arrived, an event of "other" would have too.
                try await collector.waitForChanges(2)
                let namespaces = await collector.changes().map { $0.metadata.namespace ?? "" }
                #expect(namespaces == ["team-3", "team-29"])
                let watches = try await cluster.server.openWatches().filter { $0.resource == "configmaps" }
                #expect(watches.count == 1)
                #expect(watches.first?.namespace == nil)
                let lists = try await cluster.server.requestLog().filter { $0.contains("/configmaps") && !$0.contains("watch=true") }
                #expect(lists.count == 1)
            }
        }
    }

    @Test("core and events.k8s.io events are one resource: one event per object, not two")
    func eventsOnce() async throws {
        try await TestCluster.with { cluster in
            let collector = EventCollector()
            let options = Self.options { $0.selection.include = ["core/v1/events", "events.k8s.io/v1/events"] }
            try await withSupervisor(cluster, options: options, collector: collector) { supervisor in
                #expect(supervisor.watchedResources.map(\.description) == ["core/v1/events"])
                try await collector.waitUntilListed(GroupVersionResource("core/v1/events")!)
                _ = try await cluster.server.perform("POST", "/api/v1/namespaces/default/events", body: """
                    {"apiVersion":"v1","kind":"Event","metadata":{"name":"e1"},"involvedObject":{"kind":"Pod","name":"p"},"reason":"Started","message":"hi"}
                    """)
                // Only core/v1/events is watched (above), so a second copy has no stream to come by.
                try await collector.waitForChanges(1)
                let described = await collector.described()
                #expect(described == ["added e1"])
            }
        }
    }

    @Test("events and leases are left out by default")
    func defaultExclusions() async throws {
        try await TestCluster.with { cluster in
            let collector = EventCollector()
            try await withSupervisor(cluster, options: Self.options(), collector: collector) { supervisor in
                let watched = supervisor.watchedResources.map(\.description)
                #expect(watched.contains("core/v1/configmaps"))
                #expect(!watched.contains("core/v1/events"))
                #expect(!watched.contains("events.k8s.io/v1/events"))
                #expect(!watched.contains("coordination.k8s.io/v1/leases"))
                #expect(watched.count == 51)
            }
        }
    }

    @Test("a group whose discovery fails does not stop the others, and does not block readiness")
    func partialDiscovery() async throws {
        var serverOptions = KubeTestServer.Options()
        serverOptions.aggregatedDiscoveryVersions = []
        try await TestCluster.with(serverOptions) { cluster in
            try await cluster.server.inject(FaultRule(verbs: [.discovery], group: "batch",
                                                      action: .status(code: 503, reason: "ServiceUnavailable", message: "the server is currently unable to handle the request")))
            let collector = EventCollector()
            try await withSupervisor(cluster, options: Self.options(), collector: collector) { supervisor in
                #expect(supervisor.discoveryFailures.map(\.groupVersion) == ["batch/v1"])
                let watched = supervisor.watchedResources.map(\.description)
                #expect(watched.contains("apps/v1/deployments"))
                #expect(!watched.contains("batch/v1/jobs"))
                try await cluster.server.clearFaults()
            }
        }
    }

    @Test("a forbidden resource does not hold up the others")
    func forbiddenResource() async throws {
        try await TestCluster.with(user: .token("no-secrets")) { cluster in
            try await cluster.server.addUser(TestUser(name: "no-secrets", token: "no-secrets") { _, definition, _ in definition.resource != "secrets" })
            let collector = EventCollector()
            let options = Self.options { $0.selection.include = ["core/v1/secrets", "core/v1/configmaps"] }
            try await withSupervisor(cluster, options: options, collector: collector) { supervisor in
                try await collector.waitUntilListed(TestCluster.configmaps)
                _ = try await cluster.server.perform("POST", "/api/v1/namespaces/default/configmaps",
                                                     body: #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"visible"}}"#)
                try await collector.waitForChanges(1)
                let observed1 = await collector.described()
                #expect(observed1 == ["added visible"])
                try await waitUntil { supervisor.observer.count(.forbidden) >= 1 }
                #expect(supervisor.observer.state(of: WatchScope(GroupVersionResource("core/v1/secrets")!)) == .forbidden)
                #expect(supervisor.isReady, "a forbidden resource does not hold up readiness")
                #expect(!supervisor.isSynced)
            }
        }
    }

    @Test("CRDs that may not be watched are warned about once, naming what it costs, also when they are bridged")
    func forbiddenDefinitions() async throws {
        try await TestCluster.with(user: .token("no-crds")) { cluster in
            try await cluster.server.addUser(TestUser(name: "no-crds", token: "no-crds") { _, definition, _ in definition.resource != "customresourcedefinitions" })
            for include in [["core/v1/configmaps"], ["core/v1/configmaps", "apiextensions.k8s.io/v1/customresourcedefinitions"]] {
                let logs = CapturedLogs()
                let options = Self.options { $0.selection.include = include }
                try await withSupervisor(cluster, options: options, collector: EventCollector(), logger: logs.logger) { supervisor in
                    try await waitUntil {
                        supervisor.isSynced == (include.count == 1) && supervisor.observer.count(.forbidden) >= include.count - 1
                            && logs.messages.filter { $0.contains("customresourcedefinitions") }.count >= include.count
                    }
                    let mentions = logs.messages.filter { $0.contains("customresourcedefinitions") }
                    let warnings = mentions.filter { $0.hasPrefix("warning") }
                    #expect(warnings.count == 1, "\(mentions)")
                    #expect(mentions.count == include.count, "\(mentions)")
                    #expect(mentions.contains { $0.contains("rediscovery every") })
                }
            }
        }
    }

    @Test("credentials that may not list cluster-wide fall back to one watch per selected namespace")
    func namespaceFallback() async throws {
        try await TestCluster.with(user: .token("namespaced")) { cluster in
            try await cluster.server.addUser(TestUser(name: "namespaced", token: "namespaced") { verb, definition, namespace in
                if verb == .discovery || definition.resource == "customresourcedefinitions" { return true }
                return definition.resource == "configmaps" && (namespace == "team-a" || namespace == "team-b")
            })
            for namespace in ["team-a", "team-b", "team-c"] {
                _ = try await cluster.server.perform("POST", "/api/v1/namespaces", body: #"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"\#(namespace)"}}"#)
            }
            let collector = EventCollector()
            let options = Self.options {
                $0.selection.include = ["core/v1/configmaps"]
                $0.selection.includeNamespaces = ["team-a", "team-b"]
            }
            try await withSupervisor(cluster, options: options, collector: collector) { supervisor in
                try await waitUntil {
                    supervisor.watchedScopes.map(\.description) == ["core/v1/configmaps@team-a", "core/v1/configmaps@team-b"]
                        && supervisor.isSynced
                }
                for namespace in ["team-a", "team-b", "team-c"] {
                    _ = try await cluster.server.perform("POST", "/api/v1/namespaces/\(namespace)/configmaps",
                                                         body: #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm"}}"#)
                }
                try await collector.waitForChanges(2)
                let changes = await collector.changes()
                #expect(Set(changes.map { $0.scope.description }) == ["core/v1/configmaps@team-a", "core/v1/configmaps@team-b"])
                let watches = try await cluster.server.openWatches().filter { $0.resource == "configmaps" }.compactMap(\.namespace).sorted()
                #expect(watches == ["team-a", "team-b"])
            }
        }
    }

    @Test("no periodic resync: unchanged objects are emitted once, however long it runs")
    func noResync() async throws {
        var serverOptions = KubeTestServer.Options()
        serverOptions.bookmarkInterval = .milliseconds(200)
        try await TestCluster.with(serverOptions) { cluster in
            for name in ["a", "b", "c"] {
                _ = try await cluster.server.perform("POST", "/api/v1/namespaces/default/configmaps",
                                                     body: #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"\#(name)"}}"#)
            }
            let collector = EventCollector()
            let options = Self.options {
                $0.selection.include = ["core/v1/configmaps", "core/v1/namespaces"]
                $0.rediscoveryInterval = .milliseconds(300)
                $0.watcher.watchTimeoutSeconds = 1...1
            }
            try await withSupervisor(cluster, options: options, collector: collector) { _ in
                try await collector.waitForChanges(7)
                // Several watch timeouts (each a new watch), rediscoveries and bookmarks later:
                try await waitUntil {
                    try await cluster.server.requestLog().filter { $0.contains("/configmaps") && $0.contains("watch=true") }.count >= 4
                }
                let described = await collector.described(TestCluster.configmaps)
                #expect(described == ["synced a", "synced b", "synced c"])
                let observed2 = await collector.changes().count
                #expect(observed2 == 7)
            }
        }
    }
}
