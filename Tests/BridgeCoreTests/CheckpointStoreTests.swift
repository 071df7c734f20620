import BridgeCheckpoint
import BridgeCore
import Foundation
import KubeModel
import Testing
import TestSupport

@Suite("SQLite checkpoint store")
struct CheckpointStoreTests {
    static let configmaps = WatchScope(GroupVersionResource("core/v1/configmaps")!)
    static let teamA = WatchScope(GroupVersionResource("core/v1/secrets")!, namespace: "team-a")

    static func entry(_ name: String, rv: String, generation: Int64? = nil) -> KnownObjects.Entry {
        KnownObjects.Entry(namespace: "default", name: name, resourceVersion: rv, generation: generation, stored: true)
    }

    @Test("saved deltas come back after reopening: watermarks, known objects, namespace scopes")
    func roundTrip() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("checkpoints.sqlite").path
        let store = try SQLiteCheckpointStore(path: path)
        try await store.save([
            CheckpointDelta(scope: Self.configmaps, resourceVersion: "10", apiVersion: "v1", kind: "ConfigMap",
                            upserts: ["u1": Self.entry("a", rv: "5", generation: 2), "u2": Self.entry("b", rv: "6")]),
            CheckpointDelta(scope: Self.teamA, resourceVersion: "11", apiVersion: "v1", kind: "Secret", upserts: ["u3": Self.entry("s", rv: "7")]),
        ])
        try await store.save([CheckpointDelta(scope: Self.configmaps, resourceVersion: "12", upserts: ["u1": Self.entry("a", rv: "12", generation: 3)], deletions: ["u2"])])
        try await store.close()

        let reopened = try SQLiteCheckpointStore(path: path)
        let loaded = try await reopened.load()
        #expect(loaded[Self.configmaps]?.resourceVersion == "12")
        #expect(loaded[Self.configmaps]?.known.entries == ["u1": Self.entry("a", rv: "12", generation: 3)])
        #expect(loaded[Self.configmaps]?.known.kind == "ConfigMap", "an empty kind in a later delta keeps the stored one")
        #expect(loaded[Self.teamA]?.resourceVersion == "11")
        #expect(loaded[Self.teamA]?.known.entries["u3"]?.name == "s")
        try await reopened.close()
    }

    @Test("recorded objects come back unconfirmed, in a scope without a resourceVersion; a save confirms them, a later record changes nothing")
    func recordedObjects() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("checkpoints.sqlite").path
        let store = try SQLiteCheckpointStore(path: path)
        func recorded(_ name: String, rv: String) -> UnrecordedObject {
            var meta = ObjectMeta()
            meta.apiVersion = "v1"
            meta.kind = "ConfigMap"
            meta.name = name
            meta.namespace = "default"
            meta.uid = "uid-\(name)"
            meta.resourceVersion = rv
            return UnrecordedObject(Change(type: .added, scope: Self.configmaps, object: KubeObject(metadata: meta, bytes: .init(string: "{}"))))
        }
        try await store.record([recorded("a", rv: "3"), recorded("b", rv: "4")])
        var loaded = try await store.load()
        #expect(loaded[Self.configmaps]?.resourceVersion == nil)
        #expect(loaded[Self.configmaps]?.known.kind == "ConfigMap")
        #expect(loaded[Self.configmaps]?.known["uid-a"] == KnownObjects.Entry(namespace: "default", name: "a", resourceVersion: "3", generation: nil,
                                                                              stored: true, delivered: false))
        try await store.save([CheckpointDelta(scope: Self.configmaps, resourceVersion: "5", upserts: ["uid-a": Self.entry("a", rv: "5")])])
        try await store.record([recorded("a", rv: "6")])
        loaded = try await store.load()
        #expect(loaded[Self.configmaps]?.resourceVersion == "5")
        #expect(loaded[Self.configmaps]?.known["uid-a"]?.resourceVersion == "5")
        #expect(loaded[Self.configmaps]?.known["uid-a"]?.delivered == true)
        #expect(loaded[Self.configmaps]?.known["uid-b"]?.delivered == false)
        try await store.close()
    }

    @Test("a store that cannot be opened says where")
    func unopenable() {
        let error = #expect(throws: SQLiteCheckpointStore.Error.self) { try SQLiteCheckpointStore(path: "/nonexistent/dir/checkpoints.sqlite") }
        #expect(error?.message.contains("/nonexistent/dir/checkpoints.sqlite") == true)
    }
}
