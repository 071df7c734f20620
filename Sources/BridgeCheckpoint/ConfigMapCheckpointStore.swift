import BridgeCore
import Foundation
import KubeAPI
import KubeModel
import Logging
import NIOFoundationCompat

/// The checkpoint store replicas share: ConfigMaps in one namespace, so that the replica that
/// takes over the lease resumes from its predecessor's checkpoint.
///
/// One ConfigMap, the manifest (`name`), says per watch scope its resourceVersion and which
/// bucket ConfigMaps hold its known objects, and lists the journal: ConfigMaps holding the changes
/// since the buckets were last written. A save writes its changes as one new journal ConfigMap,
/// so it costs what changed, not the size of the index; once the journal passes `journalBytes`,
/// the next save folds it into the buckets it touched. A scope's objects are spread over buckets
/// by a hash of their uid, each well under the 1 MiB ConfigMap limit; a bucket that grows past
/// `bucketBytes` doubles its scope's bucket count. Buckets and journal entries are written once,
/// under new names, and only the manifest is updated: with its resourceVersion as a
/// precondition. A save is therefore all or nothing, and the store that opens the manifest writes
/// it at once, so that a deposed leader's next save fails with a conflict instead of overwriting
/// its successor's progress.
public actor ConfigMapCheckpointStore: CheckpointStore {
    public let namespace: String
    public let name: String
    /// Written into the manifest on each save: who holds it.
    public let holder: String
    let client: KubeClient
    let bucketBytes: Int
    let journalBytes: Int

    struct ScopeState {
        var resourceVersion: String?
        var apiVersion = ""
        var kind = ""
        var buckets: [[String: KnownObjects.Entry]] = [[:]]
        /// The ConfigMap of each bucket, once written.
        var bucketNames: [String?] = [nil]
    }

    private var scopes: [WatchScope: ScopeState] = [:]
    /// The journal's ConfigMaps, oldest first, and their size.
    private var journal: [String] = []
    private var journalSize = 0
    /// Buckets whose objects changed since they were written: the journal holds those changes.
    private var dirty: [WatchScope: Set<Int>] = [:]
    private var manifestVersion: String?
    private var generation = 0
    private var fenced = false
    /// Called once when another replica claimed the checkpoint; the replica must stop.
    let onFenced: @Sendable (CheckpointFenced) -> Void
    /// One operation at a time: each awaits the API server, and an actor lets another in meanwhile.
    /// A fold holds it only to take its snapshot and to write the manifest.
    private var busy = false
    private var folding: Task<Void, Never>?
    let logger: Logger
    private var waiting: [CheckedContinuation<Void, Never>] = []

    static let configMaps = GroupVersionResource(group: "", version: "v1", resource: "configmaps")
    /// On the manifest and every bucket: how kubebridge finds its own ConfigMaps (and leaves them
    /// out of what it bridges).
    public static let label = "kubebridge.io/checkpoint"

    public init(client: KubeClient, namespace: String, name: String = "kubebridge-checkpoint", holder: String, bucketBytes: Int = 512 * 1024,
                journalBytes: Int = 1024 * 1024, logger: Logger = Logger(label: "kubebridge"),
                onFenced: @escaping @Sendable (CheckpointFenced) -> Void = { _ in }) {
        self.journalBytes = journalBytes
        self.logger = logger
        self.onFenced = onFenced
        self.client = client
        self.namespace = namespace
        self.name = name
        self.holder = holder
        self.bucketBytes = bucketBytes
    }

    /// Reads the manifest and its buckets, then claims the manifest (writes it with this
    /// holder), and deletes buckets no manifest names (left by a save that lost the race).
    public func load() async throws -> [WatchScope: Checkpoint] {
        try await exclusively { try await loadNow() }
    }

    public func save(_ deltas: [CheckpointDelta]) async throws {
        try await exclusively { try await saveNow(deltas) }
    }

    public func record(_ objects: [UnrecordedObject]) async throws {
        try await exclusively { try await recordNow(objects) }
    }

    private func exclusively<Result>(_ body: () async throws -> Result) async throws -> Result {
        while busy { await withCheckedContinuation { waiting.append($0) } }
        busy = true
        defer {
            busy = false
            if !waiting.isEmpty { waiting.removeFirst().resume() }
        }
        return try await body()
    }

    /// A replica that saves between this one's read and its claim: read again.
    private func loadNow() async throws -> [WatchScope: Checkpoint] {
        for attempt in 1...5 {
            do {
                return try await readAndClaim()
            } catch is ClaimConflict where attempt < 5 {
                continue
            }
        }
        throw CheckpointStoreError(description: "the checkpoint ConfigMap \(namespace)/\(name) keeps changing while it is read: is another replica leading?")
    }

    struct ClaimConflict: Error {}

    /// A ConfigMap the manifest names. Gone means the manifest moved on since it was read (its
    /// writer folded the journal): read again.
    private func named(_ configMap: String) async throws -> [String: Any] {
        do {
            return try Self.json(try await client.get(Self.configMaps, namespace: namespace, name: configMap))
        } catch let error as KubeAPIError where error.isNotFound {
            throw ClaimConflict()
        }
    }

    private func readAndClaim() async throws -> [WatchScope: Checkpoint] {
        scopes = [:]
        journal = []
        journalSize = 0
        dirty = [:]
        manifestVersion = nil
        var manifest: [String: Any]?
        do {
            manifest = try Self.json(try await client.get(Self.configMaps, namespace: namespace, name: name))
        } catch let error as KubeAPIError where error.isNotFound {
            manifest = nil
        }
        if let manifest {
            let metadata = manifest["metadata"] as? [String: Any]
            manifestVersion = metadata?["resourceVersion"] as? String
            let data = manifest["data"] as? [String: String] ?? [:]
            generation = Int(data["generation"] ?? "") ?? 0
            for line in (data["scopes"] ?? "").split(separator: "\n") {
                let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
                guard fields.count == 5, let scope = Self.scope(fields[0]) else { continue }
                var state = ScopeState(resourceVersion: fields[1].isEmpty ? nil : fields[1], apiVersion: fields[2], kind: fields[3])
                let names = fields[4].split(separator: ",").map(String.init)
                state.buckets = Array(repeating: [:], count: max(1, names.count))
                state.bucketNames = Array(repeating: nil, count: max(1, names.count))
                for (index, bucket) in names.enumerated() {
                    let object = try await named(bucket)
                    state.buckets[index] = Self.decode((object["data"] as? [String: String])?["objects"] ?? "")
                    state.bucketNames[index] = bucket
                }
                scopes[scope] = state
            }
            for entry in (data["journal"] ?? "").split(separator: ",").map(String.init) {
                let object = try await named(entry)
                let changes = (object["data"] as? [String: String])?["changes"] ?? ""
                apply(journal: changes)
                journal.append(entry)
                journalSize += changes.utf8.count
            }
        }
        // The claim takes a generation of its own, so that no name this replica writes can be one a
        // deposed leader is writing.
        generation += 1
        do {
            try await writeManifest(claiming: true)
        } catch let error as KubeAPIError where error.isConflict {
            throw ClaimConflict()
        }
        await collectGarbage()
        return scopes.mapValues { state in
            var known = KnownObjects(apiVersion: state.apiVersion, kind: state.kind)
            for bucket in state.buckets {
                for (uid, entry) in bucket { known.set(uid: uid, entry) }
            }
            return Checkpoint(resourceVersion: state.resourceVersion, known: known)
        }
    }

    private func saveNow(_ deltas: [CheckpointDelta]) async throws {
        var touched: [WatchScope: Set<Int>] = [:]
        var changes = ""
        let before = scopes
        for delta in deltas {
            var state = scopes.removeValue(forKey: delta.scope) ?? ScopeState()
            state.resourceVersion = delta.resourceVersion
            if state.apiVersion.isEmpty { state.apiVersion = delta.apiVersion }
            if state.kind.isEmpty { state.kind = delta.kind }
            var changed = touched[delta.scope] ?? []
            let key = delta.scope.description
            for uid in delta.deletions {
                let bucket = Self.bucket(of: uid, count: state.buckets.count)
                if state.buckets[bucket].removeValue(forKey: uid) != nil {
                    changed.insert(bucket)
                    changes += "D\t\(key)\t\(uid)\n"
                }
            }
            for (uid, entry) in delta.upserts {
                let bucket = Self.bucket(of: uid, count: state.buckets.count)
                state.buckets[bucket][uid] = entry
                changed.insert(bucket)
                changes += "U\t\(key)\t" + Self.line(uid, entry)
            }
            scopes[delta.scope] = state
            touched[delta.scope] = changed
        }
        do {
            try await commit(touched, changes: changes)
        } catch {
            scopes = before
            throw error
        }
    }

    private func recordNow(_ objects: [UnrecordedObject]) async throws {
        var touched: [WatchScope: Set<Int>] = [:]
        var changes = ""
        let before = scopes
        for object in objects {
            // Taken out while it changes: a copy left in the dictionary would make the change copy
            // the object's whole bucket, for every object.
            var state = scopes.removeValue(forKey: object.scope) ?? ScopeState()
            if state.apiVersion.isEmpty { state.apiVersion = object.apiVersion }
            if state.kind.isEmpty { state.kind = object.kind }
            let bucket = Self.bucket(of: object.uid, count: state.buckets.count)
            if state.buckets[bucket][object.uid] == nil {
                state.buckets[bucket][object.uid] = object.entry
                touched[object.scope, default: []].insert(bucket)
                changes += "N\t\(object.scope.description)\t" + Self.line(object.uid, object.entry)
            }
            scopes[object.scope] = state
        }
        guard !touched.isEmpty else { return }
        do {
            try await commit(touched, changes: changes)
        } catch {
            scopes = before
            throw error
        }
    }

    public func close() async throws {
        await settled()
    }

    /// Writes `changes` as journal entries (each a ConfigMap of at most `bucketBytes`), then the
    /// manifest that names them: the manifest is the commit point. Once the journal is full, a
    /// fold starts beside the saves (`fold`), so that writing the buckets never holds up the rows
    /// of new objects, on which delivery waits.
    private func commit(_ touched: [WatchScope: Set<Int>], changes: String) async throws {
        guard !fenced else { throw CheckpointFenced(store: name, namespace: namespace) }
        var pending = dirty
        for (scope, buckets) in touched { pending[scope, default: []].formUnion(buckets) }
        let size = changes.utf8.count
        var created: [String] = []
        do {
            for chunk in Self.chunks(changes, maxBytes: bucketBytes) {
                let entry = "\(name)-j-\(generation + 1)-\(created.count)-\(Self.hash(holder))"
                let body: [String: Any] = [
                    "apiVersion": "v1", "kind": "ConfigMap", "immutable": true,
                    "metadata": ["name": entry, "namespace": namespace, "labels": [Self.label: name]],
                    "data": ["changes": chunk],
                ]
                _ = try await client.create(Self.configMaps, namespace: namespace, json: Self.string(body))
                created.append(entry)
            }
            journal += created
            generation += 1
            do {
                try await writeManifest()
            } catch {
                generation -= 1
                journal.removeLast(created.count)
                throw error
            }
        } catch {
            for entry in created { _ = try? await client.delete(Self.configMaps, namespace: namespace, name: entry) }
            throw error
        }
        journalSize += size
        dirty = pending
        if folding == nil, journalSize > journalBytes || journal.count >= 64 {
            folding = Task { await self.fold() }
        }
    }

    /// Folds the journal into the buckets in three steps, only the first and last of which hold
    /// the store (and they only change memory and write the manifest): take a snapshot of the
    /// objects and of the journal entries it covers; write the buckets the snapshot changed under
    /// new names while saves and rows go on into the journal; then name the new buckets in the
    /// manifest and drop the folded entries from it, keeping the entries written meanwhile, which
    /// a reader replays onto the new buckets. A failure leaves the journal as it was, to be folded
    /// by the next try.
    private func fold() async {
        defer { folding = nil }
        let snapshot: (scopes: [WatchScope: ScopeState], dirty: [WatchScope: Set<Int>], journal: [String], journalSize: Int, generation: Int)
        do {
            snapshot = try await exclusively {
                guard !fenced else { throw CheckpointFenced(store: name, namespace: namespace) }
                // A generation of its own, so that its bucket names are nobody else's.
                generation += 1
                defer { dirty = [:] }
                return (scopes, dirty, journal, journalSize, generation)
            }
        } catch {
            return
        }
        var staged = snapshot.scopes
        var written: [String] = []
        var replaced: [String] = []
        var resized: Set<WatchScope> = []
        func restoreDirty() async {
            _ = try? await exclusively {
                for (scope, buckets) in snapshot.dirty { dirty[scope, default: []].formUnion(buckets) }
                for scope in resized { dirty[scope] = Set(scopes[scope]?.buckets.indices ?? 0..<0) }
            }
        }
        do {
            for (scope, buckets) in snapshot.dirty {
                guard var state = staged[scope] else { continue }
                var indices = buckets
                if state.buckets.contains(where: { Self.encode($0).utf8.count > bucketBytes }) {
                    replaced += state.bucketNames.compactMap { $0 }
                    state = Self.split(state, bucketBytes: bucketBytes)
                    indices = Set(state.buckets.indices)
                    resized.insert(scope)
                }
                for index in indices.sorted() {
                    let bucketName = "\(name)-\(Self.hash(scope.description))-\(index)-\(snapshot.generation)-\(Self.hash(holder))"
                    try await createBucket(bucketName, scope: scope, objects: Self.encode(state.buckets[index]))
                    written.append(bucketName)
                    if let old = state.bucketNames[index], !replaced.contains(old) { replaced.append(old) }
                    state.bucketNames[index] = bucketName
                }
                staged[scope] = state
            }
        } catch {
            for bucket in written { _ = try? await client.delete(Self.configMaps, namespace: namespace, name: bucket) }
            logger.warning("folding the checkpoint journal into its buckets failed: \(error); the journal is kept and folded later")
            await restoreDirty()
            return
        }
        do {
            try await exclusively {
                guard !fenced else { throw CheckpointFenced(store: name, namespace: namespace) }
                let (previousScopes, previousJournal, previousSize, previousDirty) = (scopes, journal, journalSize, dirty)
                for scope in snapshot.dirty.keys {
                    guard let folded = staged[scope], var live = scopes[scope] else { continue }
                    if resized.contains(scope) {
                        // Objects saved since the snapshot move to the new bucket count, and all of
                        // the scope's buckets are due at the next fold.
                        live = Self.rebucket(live, count: folded.buckets.count)
                        if dirty[scope] != nil { dirty[scope] = Set(live.buckets.indices) }
                    }
                    live.bucketNames = folded.bucketNames
                    scopes[scope] = live
                }
                journal.removeFirst(snapshot.journal.count)
                journalSize -= snapshot.journalSize
                do {
                    try await writeManifest()
                } catch {
                    (scopes, journal, journalSize, dirty) = (previousScopes, previousJournal, previousSize, previousDirty)
                    throw error
                }
            }
        } catch {
            for bucket in written { _ = try? await client.delete(Self.configMaps, namespace: namespace, name: bucket) }
            if !(error is CheckpointFenced) {
                logger.warning("folding the checkpoint journal into its buckets failed: \(error); the journal is kept and folded later")
            }
            await restoreDirty()
            return
        }
        for old in replaced + snapshot.journal { _ = try? await client.delete(Self.configMaps, namespace: namespace, name: old) }
    }

    /// Waits for a fold in progress.
    public func settled() async {
        await folding?.value
    }

    /// Replays journal changes onto the buckets read, and marks the buckets they touch dirty.
    private func apply(journal changes: String) {
        for line in changes.split(separator: "\n") {
            let fields = line.split(separator: "\t", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3, let scope = Self.scope(String(fields[1])) else { continue }
            let rest = String(fields[2])
            let change: (uid: String, entry: KnownObjects.Entry?)
            switch fields[0] {
            case "D":
                change = (rest, nil)
            case "U", "N":
                guard let (uid, entry) = Self.decode(rest).first else { continue }
                change = (uid, entry)
            default:
                continue
            }
            // Taken out while it changes (see `recordNow`).
            var state = scopes.removeValue(forKey: scope) ?? ScopeState()
            let bucket = Self.bucket(of: change.uid, count: state.buckets.count)
            if fields[0] != "N" || state.buckets[bucket][change.uid] == nil { state.buckets[bucket][change.uid] = change.entry }
            dirty[scope, default: []].insert(bucket)
            scopes[scope] = state
        }
    }

    private func createBucket(_ bucketName: String, scope: WatchScope, objects: String) async throws {
        let body: [String: Any] = [
            "apiVersion": "v1", "kind": "ConfigMap", "immutable": true,
            "metadata": ["name": bucketName, "namespace": namespace, "labels": [Self.label: name],
                         "annotations": ["kubebridge.io/scope": scope.description]],
            "data": ["objects": objects],
        ]
        _ = try await client.create(Self.configMaps, namespace: namespace, json: Self.string(body))
    }

    /// The manifest, with the last resourceVersion this store saw as the precondition.
    private func writeManifest(claiming: Bool = false) async throws {
        var lines: [String] = []
        for scope in scopes.keys.sorted() {
            let state = scopes[scope]!
            let names = state.bucketNames.map { $0 ?? "" }.joined(separator: ",")
            lines.append([scope.description, state.resourceVersion ?? "", state.apiVersion, state.kind, names].joined(separator: "\t"))
        }
        var metadata: [String: Any] = ["name": name, "namespace": namespace, "labels": [Self.label: name]]
        if let manifestVersion { metadata["resourceVersion"] = manifestVersion }
        let body: [String: Any] = [
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
            "data": ["format": "1", "generation": String(generation), "holder": holder, "scopes": lines.joined(separator: "\n"),
                     "journal": journal.joined(separator: ",")],
        ]
        do {
            let written = manifestVersion == nil
                ? try await client.create(Self.configMaps, namespace: namespace, json: Self.string(body))
                : try await client.replace(Self.configMaps, namespace: namespace, name: name, json: Self.string(body))
            manifestVersion = written.metadata.resourceVersion
        } catch let error as KubeAPIError where error.isConflict && !claiming {
            let fence = CheckpointFenced(store: name, namespace: namespace)
            if !fenced { onFenced(fence) }
            fenced = true
            throw fence
        }
    }

    /// Deletes bucket ConfigMaps the manifest does not name.
    private func collectGarbage() async {
        let named = Set(scopes.values.flatMap { $0.bucketNames.compactMap { $0 } } + journal)
        var options = ListOptions()
        options.labelSelector = "\(Self.label)=\(name)"
        guard let list = try? await client.list(Self.configMaps, namespace: namespace, options: options) else { return }
        for item in list.items where item.metadata.name != name && !named.contains(item.metadata.name) {
            _ = try? await client.delete(Self.configMaps, namespace: namespace, name: item.metadata.name)
        }
    }

    // MARK: Encoding

    /// One line per object: uid, namespace, name, resourceVersion, generation, and `d` when
    /// delivered (`u`: only its early row). Kubernetes names and uids hold no tabs or newlines.
    static func encode(_ bucket: [String: KnownObjects.Entry]) -> String {
        var out = ""
        for uid in bucket.keys.sorted() { out += line(uid, bucket[uid]!) }
        return out
    }

    static func line(_ uid: String, _ entry: KnownObjects.Entry) -> String {
        "\(uid)\t\(entry.namespace ?? "")\t\(entry.name)\t\(entry.resourceVersion)\t\(entry.generation.map(String.init) ?? "")\t\(entry.delivered ? "d" : "u")\n"
    }

    static func decode(_ text: String) -> [String: KnownObjects.Entry] {
        var bucket: [String: KnownObjects.Entry] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard fields.count == 6 else { continue }
            bucket[String(fields[0])] = KnownObjects.Entry(
                namespace: fields[1].isEmpty ? nil : String(fields[1]), name: String(fields[2]), resourceVersion: String(fields[3]),
                generation: Int64(fields[4]), stored: true, delivered: fields[5] == "d")
        }
        return bucket
    }

    /// The changes cut at line ends into pieces of at most `maxBytes` (a line longer than that
    /// is a piece of its own).
    static func chunks(_ changes: String, maxBytes: Int) -> [String] {
        guard changes.utf8.count > maxBytes else { return changes.isEmpty ? [] : [changes] }
        var pieces: [String] = []
        var piece = ""
        var size = 0
        for line in changes.split(separator: "\n") {
            let length = line.utf8.count + 1
            if size + length > maxBytes, !piece.isEmpty {
                pieces.append(piece)
                piece = ""
                size = 0
            }
            piece += line + "\n"
            size += length
        }
        if !piece.isEmpty { pieces.append(piece) }
        return pieces
    }

    /// The state's objects spread over `count` buckets, none of them named yet.
    static func rebucket(_ state: ScopeState, count: Int) -> ScopeState {
        var moved = state
        moved.buckets = [[String: KnownObjects.Entry]](repeating: [:], count: count)
        moved.bucketNames = Array(repeating: nil, count: count)
        for bucket in state.buckets {
            for (uid, entry) in bucket { moved.buckets[Self.bucket(of: uid, count: count)][uid] = entry }
        }
        return moved
    }

    /// Doubles the bucket count until every bucket fits.
    static func split(_ state: ScopeState, bucketBytes: Int) -> ScopeState {
        var all: [String: KnownObjects.Entry] = [:]
        for bucket in state.buckets { all.merge(bucket) { $1 } }
        var count = state.buckets.count
        while true {
            count *= 2
            var buckets = [[String: KnownObjects.Entry]](repeating: [:], count: count)
            for (uid, entry) in all { buckets[bucket(of: uid, count: count)][uid] = entry }
            if buckets.allSatisfy({ encode($0).utf8.count <= bucketBytes }) || count >= 4096 {
                var split = state
                split.buckets = buckets
                split.bucketNames = Array(repeating: nil, count: count)
                return split
            }
        }
    }

    static func bucket(of uid: String, count: Int) -> Int {
        count == 1 ? 0 : Int(fnv1a(uid) % UInt64(count))
    }

    static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return hash
    }

    /// Eight hex digits, for names.
    static func hash(_ text: String) -> String {
        let value = fnv1a(text) & 0xFFFF_FFFF
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 8 - digits.count) + digits
    }

    static func scope(_ key: String) -> WatchScope? {
        let parts = key.split(separator: "@", maxSplits: 1).map(String.init)
        guard let resource = GroupVersionResource(parts[0]) else { return nil }
        return WatchScope(resource, namespace: parts.count == 2 ? parts[1] : nil)
    }

    static func json(_ object: KubeObject) throws -> [String: Any] {
        guard let value = try JSONSerialization.jsonObject(with: Data(buffer: object.bytes)) as? [String: Any] else {
            throw CheckpointStoreError(description: "\(object.metadata.name) is not a JSON object")
        }
        return value
    }

    static func string(_ object: [String: Any]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }
}

/// Another replica claimed the checkpoint: this one must not write it again.
public struct CheckpointFenced: Error, CustomStringConvertible {
    public var store: String
    public var namespace: String
    public var description: String {
        "the checkpoint ConfigMap \(namespace)/\(store) was written by another replica since this one read it: this replica is no longer the leader and stops writing"
    }
}

public struct CheckpointStoreError: Error, CustomStringConvertible {
    public var description: String
}
