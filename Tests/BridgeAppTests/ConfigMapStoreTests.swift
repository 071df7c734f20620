import BridgeCheckpoint
import BridgeCore
import Foundation
import KubeAPI
import KubeModel
import KubeTestServer
import Synchronization
import Testing
import TestSupport

@Suite("Checkpoints in ConfigMaps, against the test API server")
struct ConfigMapStoreTests {
    static let deployments = WatchScope(GroupVersionResource("apps/v1/deployments")!)
    static let configmaps = WatchScope(GroupVersionResource("core/v1/configmaps")!, namespace: "team-a")

    static func delta(_ scope: WatchScope, rv: String, upserts: [String: KnownObjects.Entry] = [:], deletions: Set<String> = []) -> CheckpointDelta {
        CheckpointDelta(scope: scope, resourceVersion: rv, apiVersion: "v1", kind: "Thing", upserts: upserts, deletions: deletions)
    }

    static func entry(_ name: String, rv: String, namespace: String? = "team-a", delivered: Bool = true) -> KnownObjects.Entry {
        KnownObjects.Entry(namespace: namespace, name: name, resourceVersion: rv, generation: 3, stored: true, delivered: delivered)
    }

    /// A cluster with the `kubebridge` namespace.
    static func withCluster(_ body: (TestCluster) async throws -> Void) async throws {
        try await TestCluster.with { cluster in
            _ = try await cluster.client.create(TestCluster.namespaces, namespace: nil,
                                                json: #"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"kubebridge"}}"#)
            try await body(cluster)
        }
    }

    /// Checkpoint ConfigMaps the manifest does not name.
    static func unnamed(_ cluster: TestCluster) async throws -> Set<String> {
        let manifest = try await cluster.client.get(TestCluster.configmaps, namespace: "kubebridge", name: "kubebridge-checkpoint")
        let data = (try JSONSerialization.jsonObject(with: Data(manifest.bytes.readableBytesView)) as? [String: Any])?["data"] as? [String: String] ?? [:]
        var named: Set<String> = ["kubebridge-checkpoint"]
        named.formUnion((data["journal"] ?? "").split(separator: ",").map(String.init))
        for line in (data["scopes"] ?? "").split(separator: "\n") {
            named.formUnion((line.split(separator: "\t", omittingEmptySubsequences: false).last ?? "").split(separator: ",").map(String.init))
        }
        return Set(try await checkpointConfigMaps(cluster).map(\.metadata.name)).subtracting(named)
    }

    static func checkpointConfigMaps(_ cluster: TestCluster) async throws -> [KubeObject] {
        var options = ListOptions()
        options.labelSelector = "kubebridge.io/checkpoint=kubebridge-checkpoint"
        return try await cluster.client.list(TestCluster.configmaps, namespace: "kubebridge", options: options).items
    }

    @Test("what one store saved and recorded, the next one loads: watermarks, objects, deletions, and early rows as undelivered")
    func roundTrip() async throws {
        try await Self.withCluster { cluster in
            let first = ConfigMapCheckpointStore(client: cluster.client, namespace: "kubebridge", holder: "a")
            #expect(try await first.load().isEmpty)
            try await first.save([Self.delta(Self.deployments, rv: "10", upserts: ["u1": Self.entry("web", rv: "9"), "u2": Self.entry("api", rv: "10")]),
                                  Self.delta(Self.configmaps, rv: "12", upserts: ["u3": Self.entry("settings", rv: "12")])])
            try await first.save([Self.delta(Self.deployments, rv: "15", deletions: ["u2"])])
            var early = UnrecordedObject(Change(type: .added, scope: Self.configmaps, object: KubeObject(metadata: {
                var meta = ObjectMeta()
                (meta.apiVersion, meta.kind, meta.name, meta.namespace, meta.uid, meta.resourceVersion) = ("v1", "ConfigMap", "new", "team-a", "u4", "14")
                return meta
            }(), bytes: .init())))
            early.entry.generation = nil
            try await first.record([early])
            try await first.record([early])

            let second = ConfigMapCheckpointStore(client: cluster.client, namespace: "kubebridge", holder: "b")
            let loaded = try await second.load()
            #expect(loaded[Self.deployments]?.resourceVersion == "15")
            #expect(loaded[Self.deployments]?.known["u1"] == Self.entry("web", rv: "9"))
            #expect(loaded[Self.deployments]?.known["u2"] == nil)
            #expect(loaded[Self.configmaps]?.resourceVersion == "12")
            #expect(loaded[Self.configmaps]?.known["u4"] == KnownObjects.Entry(namespace: "team-a", name: "new", resourceVersion: "14",
                                                                                         generation: nil, stored: true, delivered: false))
            #expect(loaded[Self.configmaps]?.known.count == 2)
        }
    }

    @Test("a scope's objects spread over buckets that each stay under the limit; the server refuses a ConfigMap over 1 MiB as kube-apiserver does")
    func sharding() async throws {
        try await Self.withCluster { cluster in
            let store = ConfigMapCheckpointStore(client: cluster.client, namespace: "kubebridge", holder: "a", bucketBytes: 256 * 1024)
            _ = try await store.load()
            var upserts: [String: KnownObjects.Entry] = [:]
            for index in 0..<20_000 { upserts["00000000-0000-4000-8000-\(String(format: "%012d", index))"] = Self.entry("object-\(index)", rv: "\(index)") }
            try await store.save([Self.delta(Self.deployments, rv: "20000", upserts: upserts)])
            let maps = try await Self.checkpointConfigMaps(cluster)
            #expect(maps.count > 4, "\(maps.count) ConfigMaps")
            #expect(maps.allSatisfy { $0.bytes.readableBytes < 300 * 1024 })
            let loaded = try await ConfigMapCheckpointStore(client: cluster.client, namespace: "kubebridge", holder: "b").load()
            #expect(loaded[Self.deployments]?.known.count == 20_000)

            let tooLarge = #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"x":"\#(String(repeating: "y", count: 1_048_577))"}}"#
            let error = await #expect(throws: KubeAPIError.self) { _ = try await cluster.client.create(TestCluster.configmaps, namespace: "kubebridge", json: tooLarge) }
            #expect(error?.status?.message == #"ConfigMap "big" is invalid: []: Too long: must have at most 1048576 bytes"#)
        }
    }

    @Test("fencing: once another replica opened the checkpoint, the deposed one's saves fail and change nothing; what it left half-written is cleaned up")
    func fencing() async throws {
        try await Self.withCluster { cluster in
            let fences = Mutex(0)
            let deposed = ConfigMapCheckpointStore(client: cluster.client, namespace: "kubebridge", holder: "old-leader") { _ in fences.withLock { $0 += 1 } }
            _ = try await deposed.load()
            try await deposed.save([Self.delta(Self.deployments, rv: "5", upserts: ["u1": Self.entry("web", rv: "5")])])
            let successor = ConfigMapCheckpointStore(client: cluster.client, namespace: "kubebridge", holder: "new-leader")
            #expect(try await successor.load()[Self.deployments]?.resourceVersion == "5")
            await #expect(throws: CheckpointFenced.self) {
                try await deposed.save([Self.delta(Self.deployments, rv: "99", upserts: ["u9": Self.entry("late", rv: "99")])])
            }
            await #expect(throws: CheckpointFenced.self) { try await deposed.save([Self.delta(Self.deployments, rv: "100")]) }
            #expect(fences.withLock { $0 } == 1, "the replica is told once that it must stop")
            try await successor.save([Self.delta(Self.deployments, rv: "7", upserts: ["u2": Self.entry("api", rv: "7")])])
            let reader = ConfigMapCheckpointStore(client: cluster.client, namespace: "kubebridge", holder: "reader")
            let loaded = try await reader.load()
            #expect(loaded[Self.deployments]?.resourceVersion == "7")
            #expect(loaded[Self.deployments]?.known["u9"] == nil)
            #expect(loaded[Self.deployments]?.known.count == 2)
            // Only what the manifest names: no orphan from the refused save, nothing a save replaced.
            #expect(try await Self.unnamed(cluster).isEmpty)
        }
    }

    @Test("saves and records at the same time, as the ledger makes them: each waits its turn, none is lost, none fences the store")
    func concurrentWrites() async throws {
        try await Self.withCluster { cluster in
            let fences = Mutex(0)
            let store = ConfigMapCheckpointStore(client: cluster.client, namespace: "kubebridge", holder: "a") { _ in fences.withLock { $0 += 1 } }
            _ = try await store.load()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<20 {
                    group.addTask {
                        try await store.save([Self.delta(Self.deployments, rv: "\(index)", upserts: ["s\(index)": Self.entry("saved-\(index)", rv: "\(index)")])])
                    }
                    group.addTask {
                        var meta = ObjectMeta()
                        (meta.apiVersion, meta.kind, meta.name, meta.namespace, meta.uid, meta.resourceVersion) = ("v1", "ConfigMap", "r\(index)", "team-a", "r\(index)", "\(index)")
                        try await store.record([UnrecordedObject(Change(type: .added, scope: Self.configmaps, object: KubeObject(metadata: meta, bytes: .init())))])
                    }
                }
                try await group.waitForAll()
            }
            #expect(fences.withLock { $0 } == 0)
            let loaded = try await ConfigMapCheckpointStore(client: cluster.client, namespace: "kubebridge", holder: "b").load()
            #expect(loaded[Self.deployments]?.known.count == 20)
            #expect(loaded[Self.configmaps]?.known.count == 20)
        }
    }

    @Test("small saves go to the journal, one small ConfigMap each, and fold into the buckets once it is full; a reader replays it")
    func journal() async throws {
        try await Self.withCluster { cluster in
            let store = ConfigMapCheckpointStore(client: cluster.client, namespace: "kubebridge", holder: "a", journalBytes: 1024)
            _ = try await store.load()
            var largest = 0
            for index in 0..<60 {
                try await store.save([Self.delta(Self.deployments, rv: "\(index)", upserts: ["u\(index)": Self.entry("object-\(index)", rv: "\(index)")],
                                                 deletions: index % 10 == 9 ? ["u\(index - 5)"] : [])])
                largest = max(largest, try await Self.checkpointConfigMaps(cluster).count)
                // A fold writes its buckets beside the saves, and names them once they are all written.
                await store.settled()
                #expect(try await Self.unnamed(cluster).isEmpty)
            }
            #expect(largest < 30, "the journal folded into the buckets and its entries were deleted (\(largest) ConfigMaps at most)")
            let loaded = try await ConfigMapCheckpointStore(client: cluster.client, namespace: "kubebridge", holder: "b").load()
            #expect(loaded[Self.deployments]?.resourceVersion == "59")
            #expect(loaded[Self.deployments]?.known.count == 54)
            #expect(loaded[Self.deployments]?.known["u4"] == nil && loaded[Self.deployments]?.known["u59"] == Self.entry("object-59", rv: "59"))
        }
    }

    @Test("a fold writes its buckets beside the saves: a new object's row is written while the fold's buckets are held up, and the fold names them after")
    func foldBesideWrites() async throws {
        try await Self.withCluster { cluster in
            let store = ConfigMapCheckpointStore(client: cluster.client, namespace: "kubebridge", holder: "a", journalBytes: 1024)
            _ = try await store.load()
            var upserts: [String: KnownObjects.Entry] = [:]
            for index in 0..<40 { upserts["u\(index)"] = Self.entry("object-\(index)", rv: "\(index)") }
            // The fold's first bucket (buckets carry their scope in an annotation; journal entries have none) waits until released.
            _ = try await cluster.server.inject(FaultRule(verbs: [.create], resource: "configmaps", bodyContains: #""annotations""#, action: .hold, count: 1))
            try await store.save([Self.delta(Self.deployments, rv: "40", upserts: upserts)])
            try await waitUntil { try await cluster.server.heldRequests() == 1 }
            let recorded = Ending()
            Task {
                var meta = ObjectMeta()
                (meta.apiVersion, meta.kind, meta.name, meta.namespace, meta.uid, meta.resourceVersion) = ("v1", "ConfigMap", "new", "team-a", "n1", "41")
                do {
                    try await store.record([UnrecordedObject(Change(type: .added, scope: Self.configmaps, object: KubeObject(metadata: meta, bytes: .init())))])
                    recorded.finish(nil)
                } catch {
                    recorded.finish(error)
                }
            }
            try await waitUntil { recorded.finished }
            #expect(recorded.error == nil)
            #expect(try await cluster.server.heldRequests() == 1, "the fold is still held up")
            try await cluster.server.releaseHeld()
            await store.settled()
            #expect(try await Self.unnamed(cluster).isEmpty)
            let loaded = try await ConfigMapCheckpointStore(client: cluster.client, namespace: "kubebridge", holder: "b").load()
            #expect(loaded[Self.deployments]?.known.count == 40)
            #expect(loaded[Self.configmaps]?.known["n1"]?.delivered == false)
            let manifest = try await cluster.client.get(TestCluster.configmaps, namespace: "kubebridge", name: "kubebridge-checkpoint")
            let data = (try JSONSerialization.jsonObject(with: Data(manifest.bytes.readableBytesView)) as? [String: Any])?["data"] as? [String: String] ?? [:]
            #expect(data["journal"]?.split(separator: ",").count == 1, "the row written during the fold stays in the journal: \(data)")
        }
    }
}
