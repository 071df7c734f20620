import BridgeCheckpoint
import BridgeCore
import CSQLite
import Foundation
import KubeModel
import NIOCore
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

    @Test("sent states are saved with their rows, read back while the store writes, replaced by newer ones and gone with their objects")
    func sentStates() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("checkpoints.sqlite").path
        let store = try SQLiteCheckpointStore(path: path)
        #expect(try store.sentState(of: "u1", in: Self.configmaps) == nil)
        try await store.save([CheckpointDelta(scope: Self.configmaps, resourceVersion: "5", upserts: ["u1": Self.entry("a", rv: "5"), "u2": Self.entry("b", rv: "5")],
                                              states: ["u1": ByteBuffer(string: #"{"v":1}"#), "u2": ByteBuffer(string: #"{"w":1}"#)])])
        #expect(try store.sentState(of: "u1", in: Self.configmaps) == ByteBuffer(string: #"{"v":1}"#))
        #expect(try store.sentState(of: "u1", in: Self.teamA) == nil, "states are per scope")
        try await store.save([CheckpointDelta(scope: Self.configmaps, resourceVersion: "6", upserts: ["u1": Self.entry("a", rv: "6")],
                                              deletions: ["u2"], states: ["u1": ByteBuffer(string: #"{"v":2}"#)])])
        #expect(try store.sentState(of: "u1", in: Self.configmaps) == ByteBuffer(string: #"{"v":2}"#))
        #expect(try store.sentState(of: "u2", in: Self.configmaps) == nil)
        try await store.close()
        let reopened = try SQLiteCheckpointStore(path: path)
        #expect(try reopened.sentState(of: "u1", in: Self.configmaps) == ByteBuffer(string: #"{"v":2}"#))
        #expect(try await reopened.load()[Self.configmaps]?.known.entries.keys.sorted() == ["u1"])
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

    /// Runs `sql` on the SQLite file at `path`, as another program (or an earlier kubebridge) would.
    static func execute(_ sql: String, at path: String) throws {
        var handle: OpaquePointer?
        defer { sqlite3_close(handle) }
        guard sqlite3_open(path, &handle) == SQLITE_OK, sqlite3_exec(handle, sql, nil, nil, nil) == SQLITE_OK else {
            throw TestFailure(message: "sqlite: \(String(cString: sqlite3_errmsg(handle)))")
        }
    }

    @Test("a store written in the earlier layout (objects keyed by scope and uid, with or without `confirmed`) opens with its objects, and takes changes after")
    func earlierLayout() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        for withConfirmed in [true, false] {
            let path = directory.appendingPathComponent("earlier-\(withConfirmed).sqlite").path
            try Self.execute("""
                CREATE TABLE scopes(scope TEXT PRIMARY KEY, resource TEXT NOT NULL, namespace TEXT,
                    resource_version TEXT NOT NULL, api_version TEXT NOT NULL, kind TEXT NOT NULL);
                CREATE TABLE objects(scope TEXT NOT NULL, uid TEXT NOT NULL, namespace TEXT, name TEXT NOT NULL,
                    resource_version TEXT NOT NULL, generation INTEGER\(withConfirmed ? ", confirmed INTEGER NOT NULL DEFAULT 1" : ""),
                    PRIMARY KEY(scope, uid)) WITHOUT ROWID;
                INSERT INTO scopes VALUES('\(Self.configmaps)', 'core/v1/configmaps', NULL, '40', 'v1', 'ConfigMap');
                INSERT INTO objects VALUES('\(Self.configmaps)', 'u1', 'default', 'a', '30', 2\(withConfirmed ? ", 1" : ""));
                INSERT INTO objects VALUES('\(Self.configmaps)', 'u2', 'default', 'b', '31', NULL\(withConfirmed ? ", 0" : ""));
                """, at: path)
            let store = try SQLiteCheckpointStore(path: path)
            let loaded = try await store.load()
            #expect(loaded[Self.configmaps]?.resourceVersion == "40")
            #expect(loaded[Self.configmaps]?.known.entries == [
                "u1": Self.entry("a", rv: "30", generation: 2),
                "u2": KnownObjects.Entry(namespace: "default", name: "b", resourceVersion: "31", generation: nil, stored: true, delivered: !withConfirmed),
            ])
            try await store.save([CheckpointDelta(scope: Self.configmaps, resourceVersion: "42", upserts: ["u2": Self.entry("b", rv: "42")], deletions: ["u1"])])
            try await store.close()
            let reopened = try SQLiteCheckpointStore(path: path)
            #expect(try await reopened.load()[Self.configmaps]?.known.entries == ["u2": Self.entry("b", rv: "42")])
            try await reopened.close()
        }
    }

    @Test("a second row of an object (written by another program) goes when the store opens: the latest counts, and a deletion leaves nothing behind")
    func duplicateRows() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("checkpoints.sqlite").path
        let store = try SQLiteCheckpointStore(path: path)
        try await store.save([CheckpointDelta(scope: Self.configmaps, resourceVersion: "10", apiVersion: "v1", kind: "ConfigMap", upserts: ["u1": Self.entry("a", rv: "5")])])
        try await store.close()
        try Self.execute("""
            INSERT INTO known_objects(scope, uid, namespace, name, resource_version, generation, confirmed)
              VALUES('\(Self.configmaps)', 'u1', 'default', 'a', '9', NULL, 1)
            """, at: path)
        let reopened = try SQLiteCheckpointStore(path: path)
        #expect(try await reopened.load()[Self.configmaps]?.known.entries == ["u1": Self.entry("a", rv: "9")])
        try await reopened.save([CheckpointDelta(scope: Self.configmaps, resourceVersion: "11", deletions: ["u1"])])
        try await reopened.close()
        let again = try SQLiteCheckpointStore(path: path)
        #expect(try await again.load()[Self.configmaps]?.known.entries == [:])
        try await again.close()
    }

    @Test("a store that cannot be opened says where")
    func unopenable() {
        let error = #expect(throws: SQLiteCheckpointStore.Error.self) { try SQLiteCheckpointStore(path: "/nonexistent/dir/checkpoints.sqlite") }
        #expect(error?.message.contains("/nonexistent/dir/checkpoints.sqlite") == true)
    }
}
