import NIOCore

/// The objects of one resource the bridge has emitted, by uid: what a relist is compared with to
/// find what changed or vanished while nobody watched. Only identity and version are kept, so a
/// large cluster costs little memory.
public struct KnownObjects: Sendable, Hashable {
    public struct Entry: Sendable, Hashable {
        public var namespace: String?
        public var name: String
        public var resourceVersion: String
        public var generation: Int64?
        /// The checkpoint store has a row for the object, so a restart knows that sinks may have
        /// seen it. An object gets its row before the first sink sees it (see `Change.unrecorded`).
        public var stored: Bool
        /// Every sink has the object at `resourceVersion`, or will get it from this process's
        /// pipelines. False for an object loaded from its early row only, whose delivery was never
        /// confirmed: a relist sends it again.
        public var delivered: Bool

        public init(namespace: String?, name: String, resourceVersion: String, generation: Int64?, stored: Bool = false, delivered: Bool = true) {
            self.namespace = namespace
            self.name = name
            self.resourceVersion = resourceVersion
            self.generation = generation
            self.stored = stored
            self.delivered = delivered
        }
    }

    /// The `apiVersion` and `kind` of the resource's objects, to describe deleted ones.
    public var apiVersion: String
    public var kind: String
    public private(set) var entries: [String: Entry]

    public init(apiVersion: String = "", kind: String = "", entries: [String: Entry] = [:]) {
        self.apiVersion = apiVersion
        self.kind = kind
        self.entries = entries
    }

    public var count: Int { entries.count }

    public subscript(uid: String) -> Entry? {
        entries[uid]
    }

    /// Records a change as emitted.
    public mutating func apply(_ change: Change) {
        let meta = change.object.metadata
        switch change.type {
        case .deleted:
            entries[meta.uid] = nil
        case .added, .modified, .synced:
            entries[meta.uid] = Entry(namespace: meta.namespace, name: meta.name, resourceVersion: meta.resourceVersion, generation: meta.generation,
                                      stored: entries[meta.uid]?.stored ?? false)
            if apiVersion.isEmpty { apiVersion = meta.apiVersion }
            if kind.isEmpty { kind = meta.kind }
        }
    }

    /// The object's row is in the checkpoint store.
    public mutating func markStored(uid: String) {
        entries[uid]?.stored = true
    }

    public mutating func remove(uid: String) {
        entries[uid] = nil
    }

    public mutating func set(uid: String, _ entry: Entry) {
        entries[uid] = entry
    }

    /// The last known identity of an object, as a minimal object: what a deletion found by relisting carries.
    public func tombstone(uid: String) -> KubeObject? {
        guard let entry = entries[uid] else { return nil }
        var meta = ObjectMeta()
        meta.apiVersion = apiVersion
        meta.kind = kind
        meta.name = entry.name
        meta.namespace = entry.namespace
        meta.uid = uid
        meta.resourceVersion = entry.resourceVersion
        meta.generation = entry.generation
        var bytes = ByteBuffer()
        bytes.writeStaticString("{\"apiVersion\":")
        bytes.writeJSONString(apiVersion)
        bytes.writeStaticString(",\"kind\":")
        bytes.writeJSONString(kind)
        bytes.writeStaticString(",\"metadata\":{\"name\":")
        bytes.writeJSONString(entry.name)
        if let namespace = entry.namespace {
            bytes.writeStaticString(",\"namespace\":")
            bytes.writeJSONString(namespace)
        }
        bytes.writeStaticString(",\"uid\":")
        bytes.writeJSONString(uid)
        bytes.writeStaticString(",\"resourceVersion\":")
        bytes.writeJSONString(entry.resourceVersion)
        bytes.writeStaticString("}}")
        return KubeObject(metadata: meta, bytes: bytes)
    }
}
