import KubeInformer
import KubeModel

/// The least-privilege ClusterRole for a configuration: get, list and watch on exactly the
/// groups and resources its `resources.include` patterns select, CustomResourceDefinitions (whose
/// watch starts rediscovery), and the discovery endpoints.
public struct ClusterRolePlan: Sendable {
    public struct Rule: Sendable, Equatable {
        public var apiGroups: [String]
        public var resources: [String]
        public var verbs: [String]
    }

    public var rules: [Rule]
    /// What the role cannot narrow as far as the patterns do, said as YAML comments.
    public var notes: [String]
    /// Rules in kubebridge's own namespace: the Lease and the checkpoint ConfigMaps.
    public var namespaced: (namespace: String, rules: [Rule])?

    public static let readVerbs = ["get", "list", "watch"]

    /// The role for a whole configuration: its selection, and the Lease and checkpoint
    /// ConfigMaps when it elects a leader or keeps checkpoints in ConfigMaps.
    public init(configuration: Configuration) {
        self.init(selection: configuration.selection)
        var local: [Rule] = []
        var namespace: String?
        if let election = configuration.leaderElection {
            namespace = election.namespace
            local.append(Rule(apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["get", "create", "update"]))
        }
        if case .kubernetes(let storeNamespace, _) = configuration.checkpointStore {
            namespace = namespace ?? storeNamespace
            // Bucket ConfigMaps get new names on each save, so resourceNames cannot narrow this.
            local.append(Rule(apiGroups: [""], resources: ["configmaps"], verbs: ["get", "list", "create", "update", "delete"]))
        }
        if let namespace, !local.isEmpty { namespaced = (namespace, local) }
    }

    public init(selection: ResourceSelection) {
        var notes: [String] = []
        // apiGroup → resources ("*" for all).
        var byGroup: [String: Set<String>] = [:]
        for pattern in selection.include {
            guard let parsed = GVRPattern(pattern) else { continue }
            let group: String
            if parsed.group.contains("*") {
                group = "*"
                if parsed.group != "*" {
                    notes.append("\(pattern): RBAC has no partial wildcards, so this grants every group; name the groups to narrow it")
                }
            } else {
                group = parsed.group
            }
            let resource = parsed.resource.contains("*") ? "*" : parsed.resource
            if parsed.resource.contains("*"), parsed.resource != "*" {
                notes.append("\(pattern): RBAC has no partial wildcards, so this grants every resource of the group; name the resources to narrow it")
            }
            byGroup[group, default: []].insert(resource)
        }
        if !selection.exclude.isEmpty {
            notes.append("resources.exclude cannot be expressed in RBAC: excluded resources stay readable, kubebridge just does not watch them")
        }
        var rules: [Rule] = []
        if let everything = byGroup["*"] {
            rules.append(Rule(apiGroups: ["*"], resources: everything.contains("*") ? ["*"] : everything.sorted(), verbs: Self.readVerbs))
            byGroup["*"] = nil
            if everything.contains("*") { byGroup = [:] }
        }
        for group in byGroup.keys.sorted() {
            let resources = byGroup[group]!
            rules.append(Rule(apiGroups: [group], resources: resources.contains("*") ? ["*"] : resources.sorted(), verbs: Self.readVerbs))
        }
        let coversCRDs = rules.contains { rule in
            (rule.apiGroups.contains("*") || rule.apiGroups.contains("apiextensions.k8s.io"))
                && (rule.resources.contains("*") || rule.resources.contains("customresourcedefinitions"))
        }
        if !coversCRDs {
            rules.append(Rule(apiGroups: ["apiextensions.k8s.io"], resources: ["customresourcedefinitions"], verbs: ["list", "watch"]))
        }
        self.rules = rules
        self.notes = notes
    }

    /// The ClusterRole and a ClusterRoleBinding to `serviceAccount` in `namespace`, as YAML.
    public func yaml(name: String = "kubebridge", serviceAccount: String = "kubebridge", namespace: String = "kubebridge") -> String {
        var lines = ["# Least-privilege access for kubebridge, from its configuration (kubebridge rbac)."]
        lines += notes.map { "# \($0)" }
        lines += [
            "apiVersion: rbac.authorization.k8s.io/v1",
            "kind: ClusterRole",
            "metadata:",
            "  name: \(name)",
            "rules:",
        ]
        for rule in rules {
            lines.append("  - apiGroups: [\(rule.apiGroups.map(Self.quoted).joined(separator: ", "))]")
            lines.append("    resources: [\(rule.resources.map(Self.quoted).joined(separator: ", "))]")
            lines.append("    verbs: [\(rule.verbs.joined(separator: ", "))]")
        }
        lines += [
            "  - nonResourceURLs: [\"/api\", \"/api/*\", \"/apis\", \"/apis/*\"]",
            "    verbs: [get]",
            "---",
            "apiVersion: rbac.authorization.k8s.io/v1",
            "kind: ClusterRoleBinding",
            "metadata:",
            "  name: \(name)",
            "roleRef:",
            "  apiGroup: rbac.authorization.k8s.io",
            "  kind: ClusterRole",
            "  name: \(name)",
            "subjects:",
            "  - kind: ServiceAccount",
            "    name: \(serviceAccount)",
            "    namespace: \(namespace)",
        ]
        if let namespaced {
            lines += ["---", "# The leader election Lease and the checkpoint ConfigMaps, in kubebridge's namespace.",
                      "apiVersion: rbac.authorization.k8s.io/v1", "kind: Role", "metadata:", "  name: \(name)", "  namespace: \(namespaced.namespace)", "rules:"]
            for rule in namespaced.rules {
                lines.append("  - apiGroups: [\(rule.apiGroups.map(Self.quoted).joined(separator: ", "))]")
                lines.append("    resources: [\(rule.resources.map(Self.quoted).joined(separator: ", "))]")
                lines.append("    verbs: [\(rule.verbs.joined(separator: ", "))]")
            }
            lines += ["---", "apiVersion: rbac.authorization.k8s.io/v1", "kind: RoleBinding", "metadata:", "  name: \(name)",
                      "  namespace: \(namespaced.namespace)", "roleRef:", "  apiGroup: rbac.authorization.k8s.io", "  kind: Role", "  name: \(name)",
                      "subjects:", "  - kind: ServiceAccount", "    name: \(serviceAccount)", "    namespace: \(namespace)"]
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Whether the role lets its holder `verb` the resource `resource` of `group`.
    public func allows(_ verb: String, group: String, resource: String) -> Bool {
        rules.contains { rule in
            rule.verbs.contains(verb) && (rule.apiGroups.contains("*") || rule.apiGroups.contains(group))
                && (rule.resources.contains("*") || rule.resources.contains(resource))
        }
    }

    static func quoted(_ text: String) -> String { "\"\(text)\"" }
}
