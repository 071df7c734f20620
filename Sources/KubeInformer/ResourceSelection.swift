import KubeAPI
import KubeModel

/// Which resources and objects the bridge follows.
public struct ResourceSelection: Sendable {
    /// `group/version/resource` patterns, `*` matching any run of characters within a part;
    /// `core` names the core group: `apps/v1/deployments`, `*.example.com/*/*`, `core/v1/events`.
    public var include: [String] = ["*/*/*"]
    public var exclude: [String] = []
    /// Namespace patterns; empty includes every namespace. Cluster-scoped objects are not
    /// affected by namespace filters.
    public var includeNamespaces: [String] = []
    public var excludeNamespaces: [String] = []
    /// A label selector, applied by the API server.
    public var labelSelector: String?
    public var changeTypes: Set<ChangeType> = Set(ChangeType.allCases)
    /// Leave out modifications that did not move `metadata.generation` (status or metadata only).
    public var specChangesOnly = false
    /// kubebridge's own objects (its checkpoint ConfigMaps, its Lease), never emitted: each save
    /// or renewal would otherwise be a change that leads to the next save.
    public var ownObjects: [OwnObject] = []

    /// Objects of one kind in one namespace, by name or by a label they carry.
    public struct OwnObject: Sendable {
        public var kind: String
        public var namespace: String
        public var name: String?
        public var label: String?

        public init(kind: String, namespace: String, name: String? = nil, label: String? = nil) {
            self.kind = kind
            self.namespace = namespace
            self.name = name
            self.label = label
        }

        func matches(_ meta: ObjectMeta) -> Bool {
            guard meta.kind == kind, meta.namespace == namespace else { return false }
            if let name, meta.name == name { return true }
            if let label, meta.labels[label] != nil { return true }
            return false
        }
    }

    /// Noisy resources left out unless an include pattern names them without a wildcard in the
    /// resource part: events (both groups) and leases change every few seconds in any cluster.
    public static let defaultExcludes = ["core/*/events", "events.k8s.io/*/events", "coordination.k8s.io/*/leases"]

    /// Resources that serve the same objects under two groups: the second is left out when the
    /// first is selected too, so that one object yields one event.
    public static let aliases: [(kept: (group: String, resource: String), dropped: (group: String, resource: String))] = [
        (("", "events"), ("events.k8s.io", "events")),
    ]

    public init() {}

    /// Validates the patterns; an error names the bad one.
    public func validate() throws {
        for pattern in include + exclude where GVRPattern(pattern) == nil {
            throw KubeConfigError("resource pattern \"\(pattern)\" is not group/version/resource (use core for the core group, * as a wildcard)")
        }
    }

    /// The resources to watch among the discovered ones: preferred versions that support list and
    /// watch, selected by the patterns, without aliases.
    public func select(_ resources: [APIResource]) -> [APIResource] {
        let includes = include.compactMap(GVRPattern.init)
        let excludes = exclude.compactMap(GVRPattern.init)
        let defaults = Self.defaultExcludes.compactMap(GVRPattern.init)
        var selected = resources.filter { resource in
            resource.isPreferredVersion && resource.isWatchable && selects(resource.gvr, includes: includes, excludes: excludes, defaults: defaults)
        }
        for alias in Self.aliases {
            let keptSelected = selected.contains { $0.group == alias.kept.group && $0.resource == alias.kept.resource }
            if keptSelected {
                selected.removeAll { $0.group == alias.dropped.group && $0.resource == alias.dropped.resource }
            }
        }
        return selected
    }

    /// Whether the patterns select this resource.
    public func selects(_ gvr: GroupVersionResource) -> Bool {
        selects(gvr, includes: include.compactMap(GVRPattern.init), excludes: exclude.compactMap(GVRPattern.init),
                defaults: Self.defaultExcludes.compactMap(GVRPattern.init))
    }

    private func selects(_ gvr: GroupVersionResource, includes: [GVRPattern], excludes: [GVRPattern], defaults: [GVRPattern]) -> Bool {
        let matching = includes.filter { $0.matches(gvr) }
        guard !matching.isEmpty, !excludes.contains(where: { $0.matches(gvr) }) else { return false }
        if defaults.contains(where: { $0.matches(gvr) }) {
            return matching.contains { !$0.resource.contains("*") }
        }
        return true
    }

    /// Whether an object passes the namespace filters.
    public func accepts(namespace: String?) -> Bool {
        Glob.admits(namespace: namespace, include: includeNamespaces, exclude: excludeNamespaces)
    }

    /// The emission filter a watcher applies.
    public var emissionFilter: WatcherStateMachine.EmissionFilter {
        var filter = WatcherStateMachine.EmissionFilter()
        filter.changeTypes = changeTypes
        filter.specChangesOnly = specChangesOnly
        let selection = self
        filter.accepts = { meta in
            selection.accepts(namespace: meta.namespace) && !selection.ownObjects.contains { $0.matches(meta) }
        }
        return filter
    }

    /// The namespaces to watch one by one when the cluster-wide list is forbidden: only possible
    /// when the include list names them literally.
    public var literalNamespaces: [String]? {
        guard !includeNamespaces.isEmpty, includeNamespaces.allSatisfy({ !$0.contains("*") }) else { return nil }
        return includeNamespaces
    }
}
