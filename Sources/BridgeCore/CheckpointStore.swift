import KubeModel

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
public struct CheckpointDelta: Sendable {
    public var scope: WatchScope
    public var resourceVersion: String
    public var apiVersion: String
    public var kind: String
    public var upserts: [String: KnownObjects.Entry]
    public var deletions: Set<String>

    public init(scope: WatchScope, resourceVersion: String, apiVersion: String = "", kind: String = "",
                upserts: [String: KnownObjects.Entry] = [:], deletions: Set<String> = []) {
        self.scope = scope
        self.resourceVersion = resourceVersion
        self.apiVersion = apiVersion
        self.kind = kind
        self.upserts = upserts
        self.deletions = deletions
    }
}

/// Durable storage of checkpoints. `save` is atomic across all the deltas given and durable when
/// it returns; a crash leaves either all of them or none.
public protocol CheckpointStore: Sendable {
    func load() async throws -> [WatchScope: Checkpoint]
    func save(_ deltas: [CheckpointDelta]) async throws
    func close() async throws
}
