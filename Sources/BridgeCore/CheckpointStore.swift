import KubeModel
import NIOCore

/// Where a watch scope resumes: the watermark and the objects confirmed up to it.
public struct Checkpoint: Sendable, Equatable {
    public var resourceVersion: String?
    public var known: KnownObjects

    public init(resourceVersion: String?, known: KnownObjects) {
        self.resourceVersion = resourceVersion
        self.known = known
    }
}

/// What changed in one scope's checkpoint since it was last saved.
public struct CheckpointDelta: Sendable, Equatable {
    public var scope: WatchScope
    public var resourceVersion: String
    public var apiVersion: String
    public var kind: String
    public var upserts: [String: KnownObjects.Entry]
    public var deletions: Set<String>
    /// The state last sent of upserted objects (the event's `data`), for a store that keeps
    /// them (`SentStates`): the next change of the object is compared with it.
    public var states: [String: ByteBuffer]

    public init(scope: WatchScope, resourceVersion: String, apiVersion: String = "", kind: String = "",
                upserts: [String: KnownObjects.Entry] = [:], deletions: Set<String> = [], states: [String: ByteBuffer] = [:]) {
        self.scope = scope
        self.resourceVersion = resourceVersion
        self.apiVersion = apiVersion
        self.kind = kind
        self.upserts = upserts
        self.deletions = deletions
        self.states = states
    }
}

/// An object sinks are about to see while no checkpoint row knows it (`Change.unrecorded`).
public struct UnrecordedObject: Sendable, Equatable {
    public var scope: WatchScope
    public var apiVersion: String
    public var kind: String
    public var uid: String
    public var entry: KnownObjects.Entry

    public init(scope: WatchScope, apiVersion: String, kind: String, uid: String, entry: KnownObjects.Entry) {
        self.scope = scope
        self.apiVersion = apiVersion
        self.kind = kind
        self.uid = uid
        self.entry = entry
    }

    public init(_ change: Change) {
        self.init(scope: change.scope, object: ObjectVersion(change.metadata))
    }
}

/// A checkpoint store that also keeps the state last sent of each object it knows, written in
/// the same transaction as the object's row (`CheckpointDelta.states`), and read back one object
/// at a time while saves go on.
public protocol SentStates: Sendable {
    /// The state saved for the object; nil when none is.
    func sentState(of uid: String, in scope: WatchScope) throws -> ByteBuffer?
}

/// Durable storage of checkpoints. `save` is atomic across all the deltas given and durable when
/// it returns; a crash leaves either all of them or none.
public protocol CheckpointStore: Sendable {
    /// Every scope with a checkpoint; a scope that only has unconfirmed objects has no
    /// resourceVersion, and those objects have `delivered` false.
    func load() async throws -> [WatchScope: Checkpoint]
    func save(_ deltas: [CheckpointDelta]) async throws
    /// Adds rows for objects that sinks are about to see, durable when it returns, leaving any
    /// row that already exists as it is. The rows are not confirmed: they make a restart's relist
    /// send the objects again, or their deletion when they are gone.
    func record(_ objects: [UnrecordedObject]) async throws
    func close() async throws
}
