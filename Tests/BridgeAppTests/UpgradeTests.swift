import BridgeCheckpoint
import BridgeCore
import Foundation
import KubeAPI
import KubeModel
import KubeTestServer
import Testing
import TestSupport

/// Checkpoints written by an earlier kubebridge, kept as fixtures (`Fixtures/upgrade/`): a state
/// directory's SQLite file and the ConfigMaps of a shared checkpoint, each written by the stores
/// of 2026-12-03 from the same history (`UpgradeHistory`). Whatever the delivery core becomes,
/// the new code must load exactly what they hold: the watermark of every scope, every object it
/// had confirmed, and the rows of objects sinks may have seen before any confirmation (which make
/// a relist send their deletion). With that, an upgraded bridge re-sends nothing and misses no
/// deletion.
///
/// `KUBEBRIDGE_WRITE_UPGRADE_FIXTURES=1 swift test --filter UpgradeFixtureWriter` writes them
/// again, and is for a deliberate change of the stored format only.
enum UpgradeHistory {
    static let configmaps = WatchScope(GroupVersionResource("core/v1/configmaps")!)
    static let deployments = WatchScope(GroupVersionResource("apps/v1/deployments")!, namespace: "team-a")
    static let widgets = WatchScope(GroupVersionResource("example.com/v1/widgets")!)
    /// Objects seen by sinks, never confirmed: their scope was still listing at the crash.
    static let listing = WatchScope(GroupVersionResource("core/v1/secrets")!, namespace: "team-b")

    static func entry(_ name: String, _ rv: Int, namespace: String? = "default", generation: Int64? = nil, delivered: Bool = true) -> KnownObjects.Entry {
        KnownObjects.Entry(namespace: namespace, name: name, resourceVersion: "\(rv)", generation: generation, stored: true, delivered: delivered)
    }

    static func unrecorded(_ scope: WatchScope, kind: String, uid: String, name: String, rv: Int) -> UnrecordedObject {
        var meta = ObjectMeta()
        (meta.apiVersion, meta.kind, meta.uid, meta.name, meta.namespace, meta.resourceVersion) = ("v1", kind, uid, name, scope.namespace ?? "default", "\(rv)")
        return UnrecordedObject(Change(type: .added, scope: scope, object: KubeObject(metadata: meta, bytes: .init())))
    }

    /// What a bridge wrote: early rows, saves with upserts and deletions in several scopes, more
    /// early rows after the last save. Enough saves that the ConfigMap store folds its journal.
    static func write(to store: any CheckpointStore) async throws {
        try await store.record([unrecorded(configmaps, kind: "ConfigMap", uid: "cm-1", name: "settings", rv: 101)])
        try await store.save([
            CheckpointDelta(scope: configmaps, resourceVersion: "110", apiVersion: "v1", kind: "ConfigMap",
                            upserts: ["cm-1": entry("settings", 101), "cm-2": entry("flags", 105), "cm-3": entry("doomed", 108)]),
            CheckpointDelta(scope: deployments, resourceVersion: "112", apiVersion: "apps/v1", kind: "Deployment",
                            upserts: ["d-1": entry("web", 111, namespace: "team-a", generation: 4)]),
        ])
        for round in 0..<40 {
            let rv = 200 + round * 10
            try await store.save([
                CheckpointDelta(scope: widgets, resourceVersion: "\(rv + 5)", apiVersion: "example.com/v1", kind: "Widget",
                                upserts: ["w-\(round)": entry("widget-\(round)", rv, namespace: nil, generation: Int64(round))],
                                deletions: round >= 30 ? ["w-\(round - 30)"] : []),
            ])
        }
        try await store.save([
            CheckpointDelta(scope: configmaps, resourceVersion: "700", upserts: ["cm-2": entry("flags", 650)], deletions: ["cm-3"]),
            CheckpointDelta(scope: deployments, resourceVersion: "701", upserts: ["d-1": entry("web", 690, namespace: "team-a", generation: 5)]),
        ])
        try await store.record([
            unrecorded(configmaps, kind: "ConfigMap", uid: "cm-4", name: "new", rv: 710),
            unrecorded(listing, kind: "Secret", uid: "s-1", name: "token", rv: 720),
            unrecorded(listing, kind: "Secret", uid: "s-2", name: "key", rv: 721),
        ])
    }

    /// What loading it must give.
    static var expected: [WatchScope: Checkpoint] {
        var widgetEntries: [String: KnownObjects.Entry] = [:]
        for round in 10..<40 { widgetEntries["w-\(round)"] = entry("widget-\(round)", 200 + round * 10, namespace: nil, generation: Int64(round)) }
        return [
            configmaps: Checkpoint(resourceVersion: "700", known: KnownObjects(apiVersion: "v1", kind: "ConfigMap", entries: [
                "cm-1": entry("settings", 101), "cm-2": entry("flags", 650), "cm-4": entry("new", 710, delivered: false),
            ])),
            deployments: Checkpoint(resourceVersion: "701", known: KnownObjects(apiVersion: "apps/v1", kind: "Deployment", entries: [
                "d-1": entry("web", 690, namespace: "team-a", generation: 5),
            ])),
            widgets: Checkpoint(resourceVersion: "595", known: KnownObjects(apiVersion: "example.com/v1", kind: "Widget", entries: widgetEntries)),
            listing: Checkpoint(resourceVersion: nil, known: KnownObjects(apiVersion: "v1", kind: "Secret", entries: [
                "s-1": entry("token", 720, namespace: "team-b", delivered: false), "s-2": entry("key", 721, namespace: "team-b", delivered: false),
            ])),
        ]
    }

    static let directory = Fixtures.directory.appendingPathComponent("upgrade")
    static let sourceDirectory = Fixtures.sourceDirectory.appendingPathComponent("upgrade")
    static let sqliteFile = "state-2026-12-03/checkpoints.sqlite"
    static let configMapsFile = "configmaps-2026-12-03.json"
    /// Small, so that the history fills several buckets and folds the journal.
    static let bucketBytes = 1024
    static let journalBytes = 2048

    static func compare(_ loaded: [WatchScope: Checkpoint], _ expected: [WatchScope: Checkpoint]) {
        #expect(Set(loaded.keys) == Set(expected.keys))
        for (scope, checkpoint) in expected {
            #expect(loaded[scope]?.resourceVersion == checkpoint.resourceVersion, "\(scope)")
            #expect(loaded[scope]?.known.apiVersion == checkpoint.known.apiVersion, "\(scope)")
            #expect(loaded[scope]?.known.kind == checkpoint.known.kind, "\(scope)")
            let entries = loaded[scope]?.known.entries ?? [:]
            for uid in Set(entries.keys).union(checkpoint.known.entries.keys) where entries[uid] != checkpoint.known.entries[uid] {
                Issue.record("\(scope) \(uid): loaded \(String(describing: entries[uid])), expected \(String(describing: checkpoint.known.entries[uid]))")
            }
        }
    }

    /// The kubebridge namespace of a fresh cluster, with the fixture's ConfigMaps in it.
    static func restoreConfigMaps(_ cluster: TestCluster) async throws {
        _ = try await cluster.client.create(TestCluster.namespaces, namespace: nil, json: #"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"kubebridge"}}"#)
        let data = try Data(contentsOf: directory.appendingPathComponent(configMapsFile))
        let configMaps = try #require(try JSONSerialization.jsonObject(with: data) as? [[String: Any]])
        for configMap in configMaps {
            let body = try JSONSerialization.data(withJSONObject: configMap, options: [.sortedKeys])
            _ = try await cluster.client.create(TestCluster.configmaps, namespace: "kubebridge", json: String(decoding: body, as: UTF8.self))
        }
    }
}

@Suite("Upgrades: checkpoints written by an earlier kubebridge")
struct UpgradeTests {
    @Test("a state directory's SQLite file from 2026-12-03 loads every watermark, confirmed object and early row, and takes new saves")
    func sqlite() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("checkpoints.sqlite").path
        try FileManager.default.copyItem(atPath: UpgradeHistory.directory.appendingPathComponent(UpgradeHistory.sqliteFile).path, toPath: path)
        let store = try SQLiteCheckpointStore(path: path)
        UpgradeHistory.compare(try await store.load(), UpgradeHistory.expected)
        try await store.save([CheckpointDelta(scope: UpgradeHistory.listing, resourceVersion: "730", upserts: ["s-1": UpgradeHistory.entry("token", 720, namespace: "team-b")])])
        try await store.close()
        let reopened = try SQLiteCheckpointStore(path: path)
        var expected = UpgradeHistory.expected
        expected[UpgradeHistory.listing]?.resourceVersion = "730"
        expected[UpgradeHistory.listing]?.known.set(uid: "s-1", UpgradeHistory.entry("token", 720, namespace: "team-b"))
        UpgradeHistory.compare(try await reopened.load(), expected)
        try await reopened.close()
    }

    @Test("ConfigMap checkpoints from 2026-12-03 (manifest, buckets, journal) load every watermark, confirmed object and early row, and take new saves")
    func configMaps() async throws {
        try await TestCluster.with { cluster in
            try await UpgradeHistory.restoreConfigMaps(cluster)
            let store = ConfigMapCheckpointStore(client: cluster.client, namespace: "kubebridge", holder: "upgraded",
                                                 bucketBytes: UpgradeHistory.bucketBytes, journalBytes: UpgradeHistory.journalBytes)
            UpgradeHistory.compare(try await store.load(), UpgradeHistory.expected)
            try await store.save([CheckpointDelta(scope: UpgradeHistory.listing, resourceVersion: "730", upserts: ["s-1": UpgradeHistory.entry("token", 720, namespace: "team-b")])])
            try await store.close()
            let reopened = ConfigMapCheckpointStore(client: cluster.client, namespace: "kubebridge", holder: "again")
            var expected = UpgradeHistory.expected
            expected[UpgradeHistory.listing]?.resourceVersion = "730"
            expected[UpgradeHistory.listing]?.known.set(uid: "s-1", UpgradeHistory.entry("token", 720, namespace: "team-b"))
            UpgradeHistory.compare(try await reopened.load(), expected)
            try await reopened.close()
        }
    }
}

@Suite("Upgrade fixtures", .enabled(if: ProcessInfo.processInfo.environment["KUBEBRIDGE_WRITE_UPGRADE_FIXTURES"] == "1"))
struct UpgradeFixtureWriter {
    @Test("write the fixtures with today's stores")
    func write() async throws {
        let directory = UpgradeHistory.sourceDirectory
        let sqlite = directory.appendingPathComponent(UpgradeHistory.sqliteFile)
        try? FileManager.default.removeItem(at: sqlite)
        try FileManager.default.createDirectory(at: sqlite.deletingLastPathComponent(), withIntermediateDirectories: true)
        let store = try SQLiteCheckpointStore(path: sqlite.path)
        try await UpgradeHistory.write(to: store)
        UpgradeHistory.compare(try await store.load(), UpgradeHistory.expected)
        try await store.close()
        for suffix in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: sqlite.path + suffix) }

        try await TestCluster.with { cluster in
            _ = try await cluster.client.create(TestCluster.namespaces, namespace: nil, json: #"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"kubebridge"}}"#)
            let store = ConfigMapCheckpointStore(client: cluster.client, namespace: "kubebridge", holder: "kubebridge-0",
                                                 bucketBytes: UpgradeHistory.bucketBytes, journalBytes: UpgradeHistory.journalBytes)
            _ = try await store.load()
            try await UpgradeHistory.write(to: store)
            try await store.close()
            let items = try await cluster.client.list(TestCluster.configmaps, namespace: "kubebridge").items
            // As a user would back them up: name, labels and data, without the server's fields.
            let configMaps: [[String: Any]] = try items.map { item in
                let object = try #require(try JSONSerialization.jsonObject(with: Data(item.bytes.readableBytesView)) as? [String: Any])
                let metadata = object["metadata"] as? [String: Any] ?? [:]
                var kept: [String: Any] = ["name": metadata["name"] ?? ""]
                if let labels = metadata["labels"] { kept["labels"] = labels }
                if let annotations = metadata["annotations"] { kept["annotations"] = annotations }
                return ["apiVersion": "v1", "kind": "ConfigMap", "metadata": kept, "data": object["data"] ?? [:]]
            }
            let data = try JSONSerialization.data(withJSONObject: configMaps, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: directory.appendingPathComponent(UpgradeHistory.configMapsFile))
        }
    }
}
