import KubeModel

/// Which events one sink receives, so that several endpoints in one configuration can each take
/// their share. An event a sink does not take counts as acknowledged by it.
public struct EventFilter: Sendable {
    /// `group/version/resource` patterns (`core` for the core group, `*` as a wildcard).
    public var include: [String] = ["*/*/*"] {
        didSet { includePatterns = include.compactMap(GVRPattern.init) }
    }
    public var exclude: [String] = [] {
        didSet { excludePatterns = exclude.compactMap(GVRPattern.init) }
    }
    /// Namespace patterns; empty includes every namespace. Cluster-scoped objects pass.
    public var includeNamespaces: [String] = []
    public var excludeNamespaces: [String] = []
    public var changeTypes: Set<ChangeType> = Set(ChangeType.allCases)

    private var includePatterns = [GVRPattern("*/*/*")!]
    private var excludePatterns: [GVRPattern] = []

    public init() {}

    /// Whether it lets everything through: then the bridge skips it.
    public var acceptsAll: Bool {
        include == ["*/*/*"] && exclude.isEmpty && includeNamespaces.isEmpty && excludeNamespaces.isEmpty && changeTypes.count == ChangeType.allCases.count
    }

    public func accepts(resource: GroupVersionResource, namespace: String?, type: ChangeType) -> Bool {
        guard changeTypes.contains(type), includePatterns.contains(where: { $0.matches(resource) }),
              !excludePatterns.contains(where: { $0.matches(resource) }) else { return false }
        return Glob.admits(namespace: namespace, include: includeNamespaces, exclude: excludeNamespaces)
    }
}
