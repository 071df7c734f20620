import BridgeCore
import CSQLite
import Foundation
import KubeModel
import NIOCore
import NIOPosix
import Synchronization

/// Checkpoints in a SQLite file in WAL mode with full synchronization: a save is one transaction,
/// on disk when it returns. Calls run one at a time on a thread of the store's own, so that
/// other blocking work (an exec plugin, a slow disk of a file sink) never holds back the writes
/// that sinks wait for.
///
/// Known objects are rows of a table keyed by an integer that grows, found through an index of
/// the store's own in memory (scope and uid → row). Uids are random, so a table keyed by them
/// takes each new object at a random page of its b-tree: a batch of 2,000 new objects rewrote
/// about as many pages, each into the WAL and back. Appended rows fill the last pages, and a
/// change of a known object updates its row where it is.
public final class SQLiteCheckpointStore: CheckpointStore, SentStates {
    private let connection: Mutex<Connection>
    /// A second connection, for reading sent states while the first writes: in WAL mode a
    /// reader sees the last committed transaction and never waits for a writer.
    private let reader: Mutex<Reader>
    private let thread: NIOThreadPool
    public let path: String

    public struct Error: Swift.Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// The handle, its prepared statements, and the rows of known objects by scope key and uid;
    /// only touched under the store's lock.
    private struct Connection: @unchecked Sendable {
        var handle: OpaquePointer?
        var statements: [Statement: OpaquePointer] = [:]
        /// Built from the table on first use, and again after a transaction that rolled back.
        var rows: [String: [String: Int64]]?

        mutating func close() {
            for statement in statements.values { sqlite3_finalize(statement) }
            statements = [:]
            rows = nil
            sqlite3_close(handle)
            handle = nil
        }
    }

    /// The reading connection and its one statement.
    private struct Reader: @unchecked Sendable {
        var handle: OpaquePointer?
        var sentState: OpaquePointer?

        mutating func close() {
            sqlite3_finalize(sentState)
            sentState = nil
            sqlite3_close(handle)
            handle = nil
        }
    }

    /// The statements the store runs per object or per save, prepared once.
    private enum Statement: Hashable {
        case begin, commit, rollback
        case upsertScope, recordScope
        case insertObject, updateObject, deleteObject
        case scopes, objects, rowIndex
        case upsertState, deleteState

        var sql: String {
            switch self {
            case .begin: "BEGIN IMMEDIATE"
            case .commit: "COMMIT"
            case .rollback: "ROLLBACK"
            case .upsertScope: """
                INSERT INTO scopes(scope, resource, namespace, resource_version, api_version, kind) VALUES(?1, ?2, ?3, ?4, ?5, ?6)
                ON CONFLICT(scope) DO UPDATE SET resource_version = ?4,
                  api_version = CASE WHEN ?5 = '' THEN api_version ELSE ?5 END, kind = CASE WHEN ?6 = '' THEN kind ELSE ?6 END
                """
            case .recordScope: """
                INSERT INTO scopes(scope, resource, namespace, resource_version, api_version, kind) VALUES(?1, ?2, ?3, '', ?4, ?5)
                ON CONFLICT(scope) DO NOTHING
                """
            case .insertObject: """
                INSERT INTO known_objects(scope, uid, namespace, name, resource_version, generation, confirmed) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)
                """
            case .updateObject: """
                UPDATE known_objects SET namespace = ?2, name = ?3, resource_version = ?4, generation = ?5, confirmed = 1 WHERE id = ?1
                """
            case .deleteObject: "DELETE FROM known_objects WHERE id = ?1"
            case .scopes: "SELECT scope, resource, namespace, resource_version, api_version, kind FROM scopes"
            case .objects: "SELECT id, scope, uid, namespace, name, resource_version, generation, confirmed FROM known_objects ORDER BY id"
            case .rowIndex: "SELECT id, scope, uid FROM known_objects ORDER BY id"
            case .upsertState: "INSERT INTO sent_states(scope, uid, state) VALUES(?1, ?2, ?3) ON CONFLICT(scope, uid) DO UPDATE SET state = ?3"
            case .deleteState: "DELETE FROM sent_states WHERE scope = ?1 AND uid = ?2"
            }
        }
    }

    /// A value bound to a statement's parameter.
    private enum Value {
        case text(String?)
        case integer(Int64?)
        case blob(ByteBuffer)
    }

    /// Opens (or creates) the store at `path`; a store written with the earlier layout (objects
    /// keyed by scope and uid) is moved to the current one.
    public init(path: String) throws {
        self.path = path
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX
        guard sqlite3_open_v2(path, &handle, flags, nil) == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(handle)
            throw Error(message: "cannot open the checkpoint store \(path): \(message)")
        }
        connection = Mutex(Connection(handle: handle))
        reader = Mutex(Reader())
        thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
        try execute("""
            PRAGMA journal_mode=WAL;
            PRAGMA synchronous=FULL;
            CREATE TABLE IF NOT EXISTS scopes(
                scope TEXT PRIMARY KEY, resource TEXT NOT NULL, namespace TEXT,
                resource_version TEXT NOT NULL, api_version TEXT NOT NULL, kind TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS known_objects(
                id INTEGER PRIMARY KEY, scope TEXT NOT NULL, uid TEXT NOT NULL, namespace TEXT, name TEXT NOT NULL,
                resource_version TEXT NOT NULL, generation INTEGER, confirmed INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS sent_states(scope TEXT NOT NULL, uid TEXT NOT NULL, state BLOB NOT NULL, PRIMARY KEY(scope, uid));
            """)
        try migrateObjectsTable()
        try openReader()
    }

    /// Moves the rows of the earlier `objects` table (keyed by scope and uid; without `confirmed`
    /// before objects could be recorded unconfirmed, so all of them confirmed) into `known_objects`.
    private func migrateObjectsTable() throws {
        var columns: [String] = []
        try connection.withLock { connection in
            try Self.query(&connection, sql: "PRAGMA table_info(objects)", path: path) { row in columns.append(Self.text(row, 1) ?? "") }
        }
        guard !columns.isEmpty else { return }
        let confirmed = columns.contains("confirmed") ? "confirmed" : "1"
        try execute("""
            BEGIN IMMEDIATE;
            INSERT INTO known_objects(scope, uid, namespace, name, resource_version, generation, confirmed)
              SELECT scope, uid, namespace, name, resource_version, generation, \(confirmed) FROM objects ORDER BY scope, uid;
            DROP TABLE objects;
            COMMIT;
            """)
    }

    private func openReader() throws {
        try reader.withLock { reader in
            var handle: OpaquePointer?
            guard sqlite3_open_v2(path, &handle, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nil) == SQLITE_OK, let handle else {
                let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
                sqlite3_close(handle)
                throw Error(message: "cannot open the checkpoint store \(path) for reading: \(message)")
            }
            reader.handle = handle
            reader.sentState = try Self.prepare(handle, "SELECT state FROM sent_states WHERE scope = ?1 AND uid = ?2", path: path)
        }
    }

    public func sentState(of uid: String, in scope: WatchScope) throws -> ByteBuffer? {
        try reader.withLock { reader in
            guard let statement = reader.sentState else { throw Error(message: "checkpoint store \(path): closed") }
            defer { sqlite3_reset(statement) }
            for (position, text) in [(Int32(1), Self.key(scope)), (2, uid)] {
                var text = text
                _ = text.withUTF8 { bytes in
                    let pointer = bytes.baseAddress.map { UnsafeRawPointer($0) } ?? UnsafeRawPointer(("" as StaticString).utf8Start)
                    return sqlite3_bind_text(statement, position, pointer.assumingMemoryBound(to: CChar.self), Int32(bytes.count), Self.transient)
                }
            }
            switch sqlite3_step(statement) {
            case SQLITE_ROW:
                let count = Int(sqlite3_column_bytes(statement, 0))
                var buffer = ByteBuffer()
                if count > 0, let bytes = sqlite3_column_blob(statement, 0) {
                    buffer.writeBytes(UnsafeRawBufferPointer(start: bytes, count: count))
                }
                return buffer
            case SQLITE_DONE:
                return nil
            case let code:
                throw Error(message: "checkpoint store \(path): reading a sent state: \(String(cString: sqlite3_errstr(code)))")
            }
        }
    }

    private func execute(_ sql: String) throws {
        try connection.withLock { connection in
            var message: UnsafeMutablePointer<CChar>?
            guard sqlite3_exec(connection.handle, sql, nil, nil, &message) == SQLITE_OK else {
                let text = message.map { String(cString: $0) } ?? "unknown error"
                sqlite3_free(message)
                if sqlite3_get_autocommit(connection.handle) == 0 { sqlite3_exec(connection.handle, "ROLLBACK", nil, nil, nil) }
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
        reader.withLock { $0.close() }
        connection.withLock { $0.close() }
        try await thread.shutdownGracefully()
    }

    deinit {
        reader.withLock { $0.close() }
        connection.withLock { $0.close() }
        thread.shutdownGracefully { _ in }
    }

    static func key(_ scope: WatchScope) -> String { scope.description }

    private func loadSync() throws -> [WatchScope: Checkpoint] {
        try connection.withLock { connection in
            var result: [WatchScope: Checkpoint] = [:]
            var keys: [String: WatchScope] = [:]
            try Self.run(&connection, .scopes, path: path) { row in
                guard let resource = GroupVersionResource(Self.text(row, 1) ?? "") else { return }
                let scope = WatchScope(resource, namespace: Self.text(row, 2))
                keys[Self.text(row, 0) ?? ""] = scope
                let resourceVersion = Self.text(row, 3).flatMap { $0.isEmpty ? nil : $0 }
                result[scope] = Checkpoint(resourceVersion: resourceVersion, known: KnownObjects(apiVersion: Self.text(row, 4) ?? "", kind: Self.text(row, 5) ?? ""))
            }
            var index = RowIndex()
            try Self.run(&connection, .objects, path: path) { row in
                let key = Self.text(row, 1) ?? ""
                guard let uid = Self.text(row, 2) else { return }
                index.add(id: sqlite3_column_int64(row, 0), key: key, uid: uid)
                guard let scope = keys[key] else { return }
                let generation = sqlite3_column_type(row, 6) == SQLITE_NULL ? nil : Int64(sqlite3_column_int64(row, 6))
                result[scope]?.known.set(uid: uid, KnownObjects.Entry(
                    namespace: Self.text(row, 3), name: Self.text(row, 4) ?? "", resourceVersion: Self.text(row, 5) ?? "", generation: generation,
                    stored: true, delivered: sqlite3_column_int64(row, 7) != 0))
            }
            try index.install(in: &connection, path: path)
            return result
        }
    }

    /// The row index, collected as a scan of the table (in id order) reads the rows.
    private struct RowIndex {
        var rows: [String: [String: Int64]] = [:]
        /// Rows of an object beside its latest, which the index and a load take.
        var duplicates: [Int64] = []

        mutating func add(id: Int64, key: String, uid: String) {
            if let earlier = rows[key, default: [:]].updateValue(id, forKey: uid) { duplicates.append(earlier) }
        }

        /// Removes the duplicates, so that a deletion cannot leave an older row behind, and makes
        /// the index the connection's.
        func install(in connection: inout Connection, path: String) throws {
            if !duplicates.isEmpty {
                try transaction(&connection, path: path) { connection in
                    for id in duplicates { try run(&connection, .deleteObject, [.integer(id)], path: path) }
                }
            }
            connection.rows = rows
        }
    }

    private func saveSync(_ deltas: [CheckpointDelta]) throws {
        try connection.withLock { connection in
            try Self.indexRows(&connection, path: path)
            try Self.transaction(&connection, path: path) { connection in
                for delta in deltas {
                    let key = Self.key(delta.scope)
                    try Self.run(&connection, .upsertScope, [.text(key), .text(delta.scope.resource.description), .text(delta.scope.namespace),
                                                             .text(delta.resourceVersion), .text(delta.apiVersion), .text(delta.kind)], path: path)
                    for uid in delta.deletions {
                        try Self.run(&connection, .deleteState, [.text(key), .text(uid)], path: path)
                        guard let id = connection.rows?[key]?.removeValue(forKey: uid) else { continue }
                        try Self.run(&connection, .deleteObject, [.integer(id)], path: path)
                    }
                    for (uid, state) in delta.states {
                        try Self.run(&connection, .upsertState, [.text(key), .text(uid), .blob(state)], path: path)
                    }
                    for (uid, entry) in delta.upserts {
                        if let id = connection.rows?[key]?[uid] {
                            try Self.run(&connection, .updateObject, [.integer(id), .text(entry.namespace), .text(entry.name), .text(entry.resourceVersion),
                                                                      .integer(entry.generation)], path: path)
                        } else {
                            try Self.insert(&connection, key: key, uid: uid, entry, confirmed: true, path: path)
                        }
                    }
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
        try connection.withLock { connection in
            try Self.indexRows(&connection, path: path)
            try Self.transaction(&connection, path: path) { connection in
                var scopes: Set<WatchScope> = []
                // Objects come in runs of one scope: its key is made once per run.
                var current: (scope: WatchScope, key: String)?
                for object in objects {
                    let key: String
                    if let current, current.scope == object.scope {
                        key = current.key
                    } else {
                        key = Self.key(object.scope)
                        current = (object.scope, key)
                        if scopes.insert(object.scope).inserted {
                            try Self.run(&connection, .recordScope, [.text(key), .text(object.scope.resource.description), .text(object.scope.namespace),
                                                                     .text(object.apiVersion), .text(object.kind)], path: path)
                        }
                    }
                    guard connection.rows?[key]?[object.uid] == nil else { continue }
                    try Self.insert(&connection, key: key, uid: object.uid, object.entry, confirmed: false, path: path)
                }
            }
        }
    }

    private static func insert(_ connection: inout Connection, key: String, uid: String, _ entry: KnownObjects.Entry, confirmed: Bool, path: String) throws {
        try run(&connection, .insertObject, [.text(key), .text(uid), .text(entry.namespace), .text(entry.name), .text(entry.resourceVersion),
                                             .integer(entry.generation), .integer(confirmed ? 1 : 0)], path: path)
        connection.rows?[key, default: [:]][uid] = sqlite3_last_insert_rowid(connection.handle)
    }

    /// Builds the row index from the table unless it is there.
    private static func indexRows(_ connection: inout Connection, path: String) throws {
        guard connection.rows == nil else { return }
        var index = RowIndex()
        try run(&connection, .rowIndex, path: path) { row in
            guard let uid = text(row, 2) else { return }
            index.add(id: sqlite3_column_int64(row, 0), key: text(row, 1) ?? "", uid: uid)
        }
        try index.install(in: &connection, path: path)
    }

    /// Runs `body` in one transaction: all of it is committed, or none of it. The row index
    /// follows the statements, so after a rollback it is built again from the table.
    private static func transaction(_ connection: inout Connection, path: String, _ body: (inout Connection) throws -> Void) throws {
        try run(&connection, .begin, path: path)
        do {
            try body(&connection)
            try run(&connection, .commit, path: path)
        } catch {
            try? run(&connection, .rollback, path: path)
            connection.rows = nil
            throw error
        }
    }

    private static func run(_ connection: inout Connection, _ statement: Statement, _ values: [Value] = [], path: String,
                            row: (OpaquePointer) throws -> Void = { _ in }) throws {
        let prepared: OpaquePointer
        if let existing = connection.statements[statement] {
            prepared = existing
        } else {
            prepared = try prepare(connection.handle, statement.sql, path: path)
            connection.statements[statement] = prepared
        }
        // Every run binds each of its statement's parameters, so none needs clearing.
        defer { sqlite3_reset(prepared) }
        for (index, value) in values.enumerated() {
            let position = Int32(index + 1)
            switch value {
            case .text(var text?):
                // With its length: a short Swift string is not stored with a terminating NUL, and
                // handing it over as a C string would copy it to the heap first.
                text.withUTF8 { bytes in
                    let pointer = bytes.baseAddress.map { UnsafeRawPointer($0) } ?? UnsafeRawPointer(("" as StaticString).utf8Start)
                    sqlite3_bind_text(prepared, position, pointer.assumingMemoryBound(to: CChar.self), Int32(bytes.count), Self.transient)
                }
            case .integer(let number?): sqlite3_bind_int64(prepared, position, number)
            case .blob(let buffer):
                buffer.withUnsafeReadableBytes { bytes in
                    _ = sqlite3_bind_blob(prepared, position, bytes.baseAddress ?? UnsafeRawPointer(("" as StaticString).utf8Start), Int32(bytes.count), Self.transient)
                }
            case .text(nil), .integer(nil): sqlite3_bind_null(prepared, position)
            }
        }
        try step(prepared, connection.handle, path: path, row: row)
    }

    /// SQLite copies the bound bytes.
    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    /// A statement run once, not kept.
    private static func query(_ connection: inout Connection, sql: String, path: String, row: (OpaquePointer) throws -> Void) throws {
        let prepared = try prepare(connection.handle, sql, path: path)
        defer { sqlite3_finalize(prepared) }
        try step(prepared, connection.handle, path: path, row: row)
    }

    private static func prepare(_ handle: OpaquePointer?, _ sql: String, path: String) throws -> OpaquePointer {
        var prepared: OpaquePointer?
        guard sqlite3_prepare_v2(handle, sql, -1, &prepared, nil) == SQLITE_OK, let prepared else {
            throw Error(message: "checkpoint store \(path): \(String(cString: sqlite3_errmsg(handle)))")
        }
        return prepared
    }

    private static func step(_ prepared: OpaquePointer, _ handle: OpaquePointer?, path: String, row: (OpaquePointer) throws -> Void) throws {
        while true {
            let status = sqlite3_step(prepared)
            if status == SQLITE_ROW {
                try row(prepared)
            } else if status == SQLITE_DONE {
                return
            } else {
                throw Error(message: "checkpoint store \(path): \(String(cString: sqlite3_errmsg(handle)))")
            }
        }
    }

    private static func text(_ statement: OpaquePointer, _ index: Int32) -> String? {
        guard let text = sqlite3_column_text(statement, index) else { return nil }
        return String(cString: text)
    }
}
