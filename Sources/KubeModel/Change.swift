
/// What happened to an object.
public enum ChangeType: String, Sendable, Hashable, Codable, CaseIterable {
    case added
    case modified
    case deleted
    /// The object's state as a list found it: new to the bridge, or changed while it was not watching.
    case synced
}

/// One watch's stream of a resource: cluster-wide, or one namespace when listing cluster-wide is
/// forbidden. Order and checkpoints are kept per scope: resourceVersions of different watches are
/// never compared.
public struct WatchScope: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
    public var resource: GroupVersionResource
    /// nil for the cluster-wide watch.
    public var namespace: String?

    public init(_ resource: GroupVersionResource, namespace: String? = nil) {
        self.resource = resource
        self.namespace = namespace
    }

    public var description: String { namespace.map { "\(resource)@\($0)" } ?? resource.description }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.resource, lhs.namespace ?? "") < (rhs.resource, rhs.namespace ?? "")
    }
}

/// One change of one object, as the bridge emits it.
public struct Change: Sendable {
    public var type: ChangeType
    /// The watch the change came from.
    public var scope: WatchScope
    public var resource: GroupVersionResource { scope.resource }
    /// The object as received; for a deletion found by relisting, the last identity the bridge knew.
    public var object: KubeObject
    /// A deletion the bridge inferred from a list (the object was gone): it did not see the final
    /// state, like client-go's DeletedFinalStateUnknown.
    public var finalStateUnknown: Bool
    /// No checkpoint row knows the object yet. The bridge records it durably before any sink sees
    /// this change, so that a restart which has to relist knows that sinks may have seen the
    /// object, and sends its deletion if it vanished meanwhile.
    public var unrecorded: Bool

    public init(type: ChangeType, scope: WatchScope, object: KubeObject, finalStateUnknown: Bool = false, unrecorded: Bool = false) {
        self.type = type
        self.scope = scope
        self.object = object
        self.finalStateUnknown = finalStateUnknown
        self.unrecorded = unrecorded
    }

    public init(type: ChangeType, resource: GroupVersionResource, object: KubeObject, finalStateUnknown: Bool = false) {
        self.init(type: type, scope: WatchScope(resource), object: object, finalStateUnknown: finalStateUnknown)
    }

    public var metadata: ObjectMeta { object.metadata }
}

/// What an informer emits, in order per watch scope.
public enum ResourceEvent: Sendable {
    case change(Change)
    /// Everything of the scope up to this resourceVersion has been emitted: a bookmark, the end
    /// of a list, or changes the filters left out. It moves the checkpoint of quiet resources.
    case progress(WatchScope, resourceVersion: String)

    public var scope: WatchScope {
        switch self {
        case .change(let change): change.scope
        case .progress(let scope, _): scope
        }
    }

    public var resource: GroupVersionResource { scope.resource }
}
