import BridgeCore
import CSQLite
import Foundation
import KubeModel
import NIOPosix
import Synchronization

/// Checkpoints in a SQLite file in WAL mode with full synchronization: a save is one transaction,
/// on disk when it returns. Calls run one at a time on a thread of the store's own, so that
/// other blocking work (an exec plugin, a slow disk of a file sink) never holds back the writes
/// that sinks wait for.
public final class SQLiteCheckpointStore: CheckpointStore {
    private let database: Mutex<OpaquePointer?>
    /// Prepared statements by SQL text, used under `database`'s lock: a save of thousands of rows
    /// prepares each statement once.
    private let statements = Mutex<[String: PreparedStatement]>([:])

    /// A prepared statement; only touched under `database`'s lock.
    private struct PreparedStatement: @unchecked Sendable {
        let pointer: OpaquePointer
    }
    private let thread: NIOThreadPool
    public let path: String

    public struct Error: Swift.Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// Opens (or creates) the store at `path`.
    public init(path: String) throws {
        self.path = path
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX
        guard sqlite3_open_v2(path, &handle, flags, nil) == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(handle)
            throw Error(message: "cannot open the checkpoint store \(path): \(message)")
        }
        database = Mutex(handle)
        thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
        try execute("""
            PRAGMA journal_mode=WAL;
            PRAGMA synchronous=FULL;
            CREATE TABLE IF NOT EXISTS scopes(
                scope TEXT PRIMARY KEY, resource TEXT NOT NULL, namespace TEXT,
                resource_version TEXT NOT NULL, api_version TEXT NOT NULL, kind TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS objects(
                scope TEXT NOT NULL, uid TEXT NOT NULL, namespace TEXT, name TEXT NOT NULL,
                resource_version TEXT NOT NULL, generation INTEGER, confirmed INTEGER NOT NULL DEFAULT 1,
                PRIMARY KEY(scope, uid)) WITHOUT ROWID;
            """)
        // Stores written before objects could be recorded unconfirmed hold confirmed rows only.
        var columns: [String] = []
        try database.withLock { handle in
            try query(handle, "PRAGMA table_info(objects)", bind: { _ in }) { row in columns.append(column(row, 1) ?? "") }
        }
        if !columns.contains("confirmed") {
            try execute("ALTER TABLE objects ADD COLUMN confirmed INTEGER NOT NULL DEFAULT 1")
        }
    }

    private func execute(_ sql: String) throws {
        try database.withLock { handle in
            var message: UnsafeMutablePointer<CChar>?
            guard sqlite3_exec(handle, sql, nil, nil, &message) == SQLITE_OK else {
                let text = message.map { String(cString: $0) } ?? "unknown error"
                sqlite3_free(message)
                throw Error(message: "checkpoint store \(path): \(text)")
            }
        }
    }

    public func load() async throws -> [WatchScope: Checkpoint] {
        try await thread.runIfActive { try self.loadSync() }
    }

    /// Saves the deltas in one transaction. A save that started is not cancelled: the last one
    /// runs while the process shuts down, when everything around it is being cancelled.
    public func save(_ deltas: [CheckpointDelta]) async throws {
        guard !deltas.isEmpty else { return }
        try await Task.detached {
            try await self.thread.runIfActive { try self.saveSync(deltas) }
        }.value
    }

    public func close() async throws {
        database.withLock { handle in
            finalizeStatements()
            sqlite3_close(handle)
            handle = nil
        }
        try await thread.shutdownGracefully()
    }

    deinit {
        database.withLock { handle in
            finalizeStatements()
            sqlite3_close(handle)
        }
        thread.shutdownGracefully { _ in }
    }

    private func finalizeStatements() {
        statements.withLock { statements in
            for statement in statements.values { sqlite3_finalize(statement.pointer) }
            statements = [:]
        }
    }

    static func key(_ scope: WatchScope) -> String { scope.description }

    private func loadSync() throws -> [WatchScope: Checkpoint] {
        try database.withLock { handle in
            var result: [WatchScope: Checkpoint] = [:]
            var keys: [String: WatchScope] = [:]
            try query(handle, "SELECT scope, resource, namespace, resource_version, api_version, kind FROM scopes", bind: { _ in }) { row in
                guard let resource = GroupVersionResource(column(row, 1) ?? "") else { return }
                let scope = WatchScope(resource, namespace: column(row, 2))
                keys[column(row, 0) ?? ""] = scope
                let resourceVersion = column(row, 3).flatMap { $0.isEmpty ? nil : $0 }
                result[scope] = Checkpoint(resourceVersion: resourceVersion, known: KnownObjects(apiVersion: column(row, 4) ?? "", kind: column(row, 5) ?? ""))
            }
            try query(handle, "SELECT scope, uid, namespace, name, resource_version, generation, confirmed FROM objects", bind: { _ in }) { row in
                guard let scope = keys[column(row, 0) ?? ""], let uid = column(row, 1) else { return }
                let generation = sqlite3_column_type(row, 5) == SQLITE_NULL ? nil : Int64(sqlite3_column_int64(row, 5))
                result[scope]?.known.set(uid: uid, KnownObjects.Entry(
                    namespace: column(row, 2), name: column(row, 3) ?? "", resourceVersion: column(row, 4) ?? "", generation: generation,
                    stored: true, delivered: sqlite3_column_int64(row, 6) != 0))
            }
            return result
        }
    }

    private func saveSync(_ deltas: [CheckpointDelta]) throws {
        try transaction { handle in
            for delta in deltas {
                let key = Self.key(delta.scope)
                try run(handle, """
                    INSERT INTO scopes(scope, resource, namespace, resource_version, api_version, kind) VALUES(?1, ?2, ?3, ?4, ?5, ?6)
                    ON CONFLICT(scope) DO UPDATE SET resource_version = ?4,
                      api_version = CASE WHEN ?5 = '' THEN api_version ELSE ?5 END, kind = CASE WHEN ?6 = '' THEN kind ELSE ?6 END
                    """, [key, delta.scope.resource.description, delta.scope.namespace, delta.resourceVersion, delta.apiVersion, delta.kind])
                for uid in delta.deletions {
                    try run(handle, "DELETE FROM objects WHERE scope = ?1 AND uid = ?2", [key, uid])
                }
                for (uid, entry) in delta.upserts {
                    try run(handle, """
                        INSERT OR REPLACE INTO objects(scope, uid, namespace, name, resource_version, generation, confirmed) VALUES(?1, ?2, ?3, ?4, ?5, ?6, 1)
                        """, [key, uid, entry.namespace, entry.name, entry.resourceVersion, entry.generation.map(String.init)], integerColumns: [6])
                }
            }
        }
    }

    public func record(_ objects: [UnrecordedObject]) async throws {
        guard !objects.isEmpty else { return }
        try await Task.detached {
            try await self.thread.runIfActive { try self.recordSync(objects) }
        }.value
    }

    private func recordSync(_ objects: [UnrecordedObject]) throws {
        try transaction { handle in
            var scopes: Set<WatchScope> = []
            for object in objects {
                let key = Self.key(object.scope)
                if scopes.insert(object.scope).inserted {
                    try run(handle, """
                        INSERT INTO scopes(scope, resource, namespace, resource_version, api_version, kind) VALUES(?1, ?2, ?3, '', ?4, ?5)
                        ON CONFLICT(scope) DO NOTHING
                        """, [key, object.scope.resource.description, object.scope.namespace, object.apiVersion, object.kind])
                }
                let entry = object.entry
                try run(handle, """
                    INSERT OR IGNORE INTO objects(scope, uid, namespace, name, resource_version, generation, confirmed) VALUES(?1, ?2, ?3, ?4, ?5, ?6, 0)
                    """, [key, object.uid, entry.namespace, entry.name, entry.resourceVersion, entry.generation.map(String.init)], integerColumns: [6])
            }
        }
    }

    /// Runs `body` in one transaction, under the connection's lock: all of it is committed, or
    /// none of it.
    private func transaction(_ body: (OpaquePointer?) throws -> Void) throws {
        try database.withLock { handle in
            try step(handle, "BEGIN IMMEDIATE")
            do {
                try body(handle)
                try step(handle, "COMMIT")
            } catch {
                try? step(handle, "ROLLBACK")
                throw error
            }
        }
    }

    private func step(_ handle: OpaquePointer?, _ sql: String) throws {
        try run(handle, sql, [])
    }

    private func run(_ handle: OpaquePointer?, _ sql: String, _ values: [String?], integerColumns: Set<Int> = []) throws {
        try query(handle, sql, bind: { statement in
            for (index, value) in values.enumerated() {
                let position = Int32(index + 1)
                if let value {
                    if integerColumns.contains(index + 1), let number = Int64(value) {
                        sqlite3_bind_int64(statement, position, number)
                    } else {
                        sqlite3_bind_text(statement, position, value, -1, unsafeBitCast(-1, to: sqlite3_destructor_type.self))
                    }
                } else {
                    sqlite3_bind_null(statement, position)
                }
            }
        }, row: { _ in })
    }

    private func query(_ handle: OpaquePointer?, _ sql: String, bind: (OpaquePointer?) -> Void, row: (OpaquePointer?) throws -> Void) throws {
        let statement = try statements.withLock { statements -> PreparedStatement in
            if let statement = statements[sql] { return statement }
            var statement: OpaquePointer?
            guard sqlite3_prepare_v2(handle, sql, -1, &statement, nil) == SQLITE_OK, let statement else {
                throw Error(message: "checkpoint store \(path): \(String(cString: sqlite3_errmsg(handle)))")
            }
            statements[sql] = PreparedStatement(pointer: statement)
            return PreparedStatement(pointer: statement)
        }.pointer
        defer {
            sqlite3_reset(statement)
            sqlite3_clear_bindings(statement)
        }
        bind(statement)
        while true {
            let status = sqlite3_step(statement)
            if status == SQLITE_ROW {
                try row(statement)
            } else if status == SQLITE_DONE {
                return
            } else {
                throw Error(message: "checkpoint store \(path): \(String(cString: sqlite3_errmsg(handle)))")
            }
        }
    }

    private func column(_ statement: OpaquePointer?, _ index: Int32) -> String? {
        guard let text = sqlite3_column_text(statement, index) else { return nil }
        return String(cString: text)
    }
}
