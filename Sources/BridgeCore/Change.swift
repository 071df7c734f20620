import KubeModel

/// What happened to an object.
public enum ChangeType: String, Sendable, Hashable, Codable, CaseIterable {
    case added
    case modified
    case deleted
    /// The object's state as a list found it: new to the bridge, or changed while it was not watching.
    case synced
}

/// One change of one object, as the bridge emits it.
public struct Change: Sendable {
    public var type: ChangeType
    public var resource: GroupVersionResource
    /// The object as received; for a deletion found by relisting, the last identity the bridge knew.
    public var object: KubeObject
    /// A deletion the bridge inferred from a list (the object was gone): it did not see the final
    /// state, like client-go's DeletedFinalStateUnknown.
    public var finalStateUnknown: Bool

    public init(type: ChangeType, resource: GroupVersionResource, object: KubeObject, finalStateUnknown: Bool = false) {
        self.type = type
        self.resource = resource
        self.object = object
        self.finalStateUnknown = finalStateUnknown
    }

    public var metadata: ObjectMeta { object.metadata }
}

/// What an informer emits, in order per resource.
public enum ResourceEvent: Sendable {
    case change(Change)
    /// Everything of the resource up to this resourceVersion has been emitted: a bookmark, the end
    /// of a list, or changes the filters left out. It moves the checkpoint of quiet resources.
    case progress(GroupVersionResource, resourceVersion: String)

    public var resource: GroupVersionResource {
        switch self {
        case .change(let change): change.resource
        case .progress(let resource, _): resource
        }
    }
}
