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
    /// Set: a change that carries changed paths passes only when one of them is under an
    /// `include` prefix (any, when empty) and not under an `exclude` one.
    public var changedPaths: ChangedPathFilter?

    private var includePatterns = [GVRPattern("*/*/*")!]
    private var excludePatterns: [GVRPattern] = []

    public init() {}

    /// Whether it lets everything through: then the bridge skips it.
    public var acceptsAll: Bool {
        include == ["*/*/*"] && exclude.isEmpty && includeNamespaces.isEmpty && excludeNamespaces.isEmpty && changeTypes.count == ChangeType.allCases.count
            && changedPaths == nil
    }

    /// `changedPaths`: those of the change, nil when it has none (an object not sent before, an
    /// addition, a deletion); such a change is not judged by them.
    public func accepts(resource: GroupVersionResource, namespace: String?, type: ChangeType, changedPaths paths: [String]? = nil) -> Bool {
        guard changeTypes.contains(type), includePatterns.contains(where: { $0.matches(resource) }),
              !excludePatterns.contains(where: { $0.matches(resource) }) else { return false }
        if let changedPaths, let paths, !changedPaths.accepts(paths) { return false }
        return Glob.admits(namespace: namespace, include: includeNamespaces, exclude: excludeNamespaces)
    }
}

/// Prefixes of JSON Pointers (`/spec`, `/metadata/labels`) that a change's paths must fall under.
/// A prefix covers itself and what is beneath it: `/spec` covers `/spec/replicas`, not `/specs`.
public struct ChangedPathFilter: Sendable, Equatable {
    public var include: [String]
    public var exclude: [String]

    public init(include: [String] = [], exclude: [String] = []) {
        self.include = include
        self.exclude = exclude
    }

    public func accepts(_ paths: [String]) -> Bool {
        paths.contains { path in
            !exclude.contains { Self.isUnder(path, $0) } && (include.isEmpty || include.contains { Self.isUnder(path, $0) || Self.isUnder($0, path) })
        }
    }

    /// Whether `path` is `prefix` or beneath it. For `include`, a path above a prefix counts too:
    /// a parent reported for children too many to list may stand for a change beneath the prefix.
    static func isUnder(_ path: String, _ prefix: String) -> Bool {
        let prefix = prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix
        return prefix.isEmpty || path == prefix || path.hasPrefix(prefix + "/")
    }
}
