/// A subresource as discovery documents describe it.
public struct SubresourceDefinition: Sendable, Hashable {
    public var name: String
    public var kind: String
    /// Set when the subresource answers with a kind of another group (deployments/scale → autoscaling/v1 Scale).
    public var group: String?
    public var version: String?
    public var verbs: [String]

    public init(_ name: String, kind: String, group: String? = nil, version: String? = nil, verbs: [String]) {
        self.name = name
        self.kind = kind
        self.group = group
        self.version = version
        self.verbs = verbs
    }
}

/// One served resource of one group version.
public struct ResourceDefinition: Sendable, Hashable {
    public var group: String
    public var version: String
    public var resource: String
    public var singular: String
    public var kind: String
    public var namespaced: Bool
    public var verbs: [String]
    public var shortNames: [String]
    public var categories: [String]
    public var subresources: [SubresourceDefinition]
    /// Custom resources are unstructured: every key of their objects is serialized in alphabetical order.
    public var isCustom: Bool
    /// Core events are served straight from etcd, without the watch cache, and expire differently.
    public var watchCached: Bool
    /// Resources served under several group versions share one storage (autoscaling v1/v2, core and events.k8s.io events).
    public var storage: String
    public var tracksGeneration: Bool

    public var apiVersion: String { group.isEmpty ? version : "\(group)/\(version)" }
    public var groupVersion: String { apiVersion }
    public var hasStatus: Bool { subresources.contains { $0.name == "status" } }
    /// The name used in Status details and messages: `configmaps` or `leases.coordination.k8s.io`.
    public var qualifiedResource: String { group.isEmpty ? resource : "\(resource).\(group)" }

    public init(
        group: String, version: String, resource: String, singular: String? = nil, kind: String,
        namespaced: Bool, verbs: [String] = ResourceDefinition.standardVerbs, shortNames: [String] = [],
        categories: [String] = [], subresources: [SubresourceDefinition] = [], isCustom: Bool = false,
        watchCached: Bool = true, storage: String? = nil, tracksGeneration: Bool = false
    ) {
        self.group = group
        self.version = version
        self.resource = resource
        self.singular = singular ?? kind.lowercased()
        self.kind = kind
        self.namespaced = namespaced
        self.verbs = verbs
        self.shortNames = shortNames
        self.categories = categories
        self.subresources = subresources
        self.isCustom = isCustom
        self.watchCached = watchCached
        self.storage = storage ?? (group.isEmpty ? resource : "\(resource).\(group)")
        self.tracksGeneration = tracksGeneration
    }

    public static let standardVerbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    /// The verb order kube-apiserver reports for custom resources.
    public static let customResourceVerbs = ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]

    /// A short stable hash standing in for the storage version hash of real discovery.
    var storageVersionHash: String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "\(storage)/\(version)".utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        }
        let bytes = withUnsafeBytes(of: hash.bigEndian) { Array($0) }
        return base64(bytes)
    }
}

/// One API group with its versions in preference order.
public struct GroupDefinition: Sendable {
    public var name: String
    public var versions: [String]
    public var resources: [ResourceDefinition]
}

enum BuiltinCatalog {
    static let getPatchUpdate = ["get", "patch", "update"]

    static func status(_ kind: String) -> SubresourceDefinition { .init("status", kind: kind, verbs: getPatchUpdate) }
    static func scale(_: String) -> SubresourceDefinition {
        .init("scale", kind: "Scale", group: "autoscaling", version: "v1", verbs: getPatchUpdate)
    }

    /// Groups in the order kube-apiserver v1.36 lists them (`/apis`), core first.
    static let groups: [GroupDefinition] = {
        func r(
            _ group: String, _ version: String, _ resource: String, _ kind: String, namespaced: Bool = true,
            verbs: [String] = ResourceDefinition.standardVerbs, short: [String] = [], categories: [String] = [],
            sub: [SubresourceDefinition] = [], watchCached: Bool = true, storage: String? = nil, generation: Bool = false
        ) -> ResourceDefinition {
            ResourceDefinition(
                group: group, version: version, resource: resource, kind: kind, namespaced: namespaced, verbs: verbs,
                shortNames: short, categories: categories, subresources: sub, watchCached: watchCached,
                storage: storage, tracksGeneration: generation)
        }
        let create = ["create"]
        let clusterVerbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        let core: [ResourceDefinition] = [
            r("", "v1", "bindings", "Binding", verbs: create),
            r("", "v1", "componentstatuses", "ComponentStatus", namespaced: false, verbs: ["get", "list"], short: ["cs"]),
            r("", "v1", "configmaps", "ConfigMap", short: ["cm"]),
            r("", "v1", "endpoints", "Endpoints", short: ["ep"]),
            r("", "v1", "events", "Event", short: ["ev"], watchCached: false),
            r("", "v1", "limitranges", "LimitRange", short: ["limits"]),
            r("", "v1", "namespaces", "Namespace", namespaced: false, verbs: clusterVerbs, short: ["ns"],
              sub: [.init("finalize", kind: "Namespace", verbs: ["update"]), status("Namespace")]),
            r("", "v1", "nodes", "Node", namespaced: false, short: ["no"],
              sub: [.init("proxy", kind: "NodeProxyOptions", verbs: ["create", "delete", "get", "patch", "update"]), status("Node")]),
            r("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", short: ["pvc"], sub: [status("PersistentVolumeClaim")]),
            r("", "v1", "persistentvolumes", "PersistentVolume", namespaced: false, short: ["pv"], sub: [status("PersistentVolume")]),
            r("", "v1", "pods", "Pod", short: ["po"], categories: ["all"], sub: [
                .init("attach", kind: "PodAttachOptions", verbs: ["create", "get"]),
                .init("binding", kind: "Binding", verbs: ["create"]),
                .init("ephemeralcontainers", kind: "Pod", verbs: getPatchUpdate),
                .init("eviction", kind: "Eviction", group: "policy", version: "v1", verbs: ["create"]),
                .init("exec", kind: "PodExecOptions", verbs: ["create", "get"]),
                .init("log", kind: "Pod", verbs: ["get"]),
                .init("portforward", kind: "PodPortForwardOptions", verbs: ["create", "get"]),
                .init("proxy", kind: "PodProxyOptions", verbs: ["create", "delete", "get", "patch", "update"]),
                .init("resize", kind: "Pod", verbs: getPatchUpdate),
                status("Pod"),
            ]),
            r("", "v1", "podtemplates", "PodTemplate"),
            r("", "v1", "replicationcontrollers", "ReplicationController", short: ["rc"], categories: ["all"],
              sub: [scale("ReplicationController"), status("ReplicationController")], generation: true),
            r("", "v1", "resourcequotas", "ResourceQuota", short: ["quota"], sub: [status("ResourceQuota")]),
            r("", "v1", "secrets", "Secret"),
            r("", "v1", "serviceaccounts", "ServiceAccount", short: ["sa"],
              sub: [.init("token", kind: "TokenRequest", group: "authentication.k8s.io", version: "v1", verbs: create)]),
            r("", "v1", "services", "Service", short: ["svc"], categories: ["all"],
              sub: [.init("proxy", kind: "ServiceProxyOptions", verbs: ["create", "delete", "get", "patch", "update"]), status("Service")]),
        ]
        return [
            GroupDefinition(name: "", versions: ["v1"], resources: core),
            GroupDefinition(name: "apiregistration.k8s.io", versions: ["v1"], resources: [
                r("apiregistration.k8s.io", "v1", "apiservices", "APIService", namespaced: false, categories: ["api-extensions"],
                  sub: [status("APIService")]),
            ]),
            GroupDefinition(name: "apps", versions: ["v1"], resources: [
                r("apps", "v1", "controllerrevisions", "ControllerRevision"),
                r("apps", "v1", "daemonsets", "DaemonSet", short: ["ds"], categories: ["all"], sub: [status("DaemonSet")], generation: true),
                r("apps", "v1", "deployments", "Deployment", short: ["deploy"], categories: ["all"],
                  sub: [scale("Deployment"), status("Deployment")], generation: true),
                r("apps", "v1", "replicasets", "ReplicaSet", short: ["rs"], categories: ["all"],
                  sub: [scale("ReplicaSet"), status("ReplicaSet")], generation: true),
                r("apps", "v1", "statefulsets", "StatefulSet", short: ["sts"], categories: ["all"],
                  sub: [scale("StatefulSet"), status("StatefulSet")], generation: true),
            ]),
            GroupDefinition(name: "events.k8s.io", versions: ["v1"], resources: [
                r("events.k8s.io", "v1", "events", "Event", short: ["ev"], watchCached: false, storage: "events"),
            ]),
            GroupDefinition(name: "authentication.k8s.io", versions: ["v1"], resources: [
                r("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", namespaced: false, verbs: create),
                r("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", namespaced: false, verbs: create),
            ]),
            GroupDefinition(name: "authorization.k8s.io", versions: ["v1"], resources: [
                r("authorization.k8s.io", "v1", "localsubjectaccessreviews", "LocalSubjectAccessReview", verbs: create),
                r("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", namespaced: false, verbs: create),
                r("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview", namespaced: false, verbs: create),
                r("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", namespaced: false, verbs: create),
            ]),
            GroupDefinition(name: "autoscaling", versions: ["v2", "v1"], resources: [
                r("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", short: ["hpa"], categories: ["all"],
                  sub: [status("HorizontalPodAutoscaler")], storage: "horizontalpodautoscalers.autoscaling", generation: true),
                r("autoscaling", "v1", "horizontalpodautoscalers", "HorizontalPodAutoscaler", short: ["hpa"], categories: ["all"],
                  sub: [status("HorizontalPodAutoscaler")], storage: "horizontalpodautoscalers.autoscaling", generation: true),
            ]),
            GroupDefinition(name: "batch", versions: ["v1"], resources: [
                r("batch", "v1", "cronjobs", "CronJob", short: ["cj"], categories: ["all"], sub: [status("CronJob")], generation: true),
                r("batch", "v1", "jobs", "Job", categories: ["all"], sub: [status("Job")], generation: true),
            ]),
            GroupDefinition(name: "certificates.k8s.io", versions: ["v1"], resources: [
                r("certificates.k8s.io", "v1", "certificatesigningrequests", "CertificateSigningRequest", namespaced: false,
                  short: ["csr"], sub: [.init("approval", kind: "CertificateSigningRequest", verbs: getPatchUpdate),
                                        status("CertificateSigningRequest")]),
            ]),
            GroupDefinition(name: "networking.k8s.io", versions: ["v1"], resources: [
                r("networking.k8s.io", "v1", "ingressclasses", "IngressClass", namespaced: false),
                r("networking.k8s.io", "v1", "ingresses", "Ingress", short: ["ing"], sub: [status("Ingress")], generation: true),
                r("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short: ["netpol"], generation: true),
            ]),
            GroupDefinition(name: "policy", versions: ["v1"], resources: [
                r("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", short: ["pdb"],
                  sub: [status("PodDisruptionBudget")], generation: true),
            ]),
            GroupDefinition(name: "rbac.authorization.k8s.io", versions: ["v1"], resources: [
                r("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced: false),
                r("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced: false),
                r("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
                r("rbac.authorization.k8s.io", "v1", "roles", "Role"),
            ]),
            GroupDefinition(name: "storage.k8s.io", versions: ["v1"], resources: [
                r("storage.k8s.io", "v1", "csidrivers", "CSIDriver", namespaced: false),
                r("storage.k8s.io", "v1", "csinodes", "CSINode", namespaced: false),
                r("storage.k8s.io", "v1", "csistoragecapacities", "CSIStorageCapacity"),
                r("storage.k8s.io", "v1", "storageclasses", "StorageClass", namespaced: false, short: ["sc"]),
                r("storage.k8s.io", "v1", "volumeattachments", "VolumeAttachment", namespaced: false, sub: [status("VolumeAttachment")]),
            ]),
            GroupDefinition(name: "admissionregistration.k8s.io", versions: ["v1"], resources: [
                r("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration",
                  namespaced: false, categories: ["api-extensions"], generation: true),
                r("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies", "ValidatingAdmissionPolicy",
                  namespaced: false, categories: ["api-extensions"], sub: [status("ValidatingAdmissionPolicy")], generation: true),
                r("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding",
                  namespaced: false, categories: ["api-extensions"], generation: true),
                r("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration",
                  namespaced: false, categories: ["api-extensions"], generation: true),
            ]),
            GroupDefinition(name: "apiextensions.k8s.io", versions: ["v1"], resources: [
                r("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", namespaced: false,
                  short: ["crd", "crds"], categories: ["api-extensions"], sub: [status("CustomResourceDefinition")], generation: true),
            ]),
            GroupDefinition(name: "scheduling.k8s.io", versions: ["v1"], resources: [
                r("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", namespaced: false, short: ["pc"]),
            ]),
            GroupDefinition(name: "coordination.k8s.io", versions: ["v1"], resources: [
                r("coordination.k8s.io", "v1", "leases", "Lease"),
            ]),
            GroupDefinition(name: "node.k8s.io", versions: ["v1"], resources: [
                r("node.k8s.io", "v1", "runtimeclasses", "RuntimeClass", namespaced: false),
            ]),
            GroupDefinition(name: "discovery.k8s.io", versions: ["v1"], resources: [
                r("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
            ]),
            GroupDefinition(name: "resource.k8s.io", versions: ["v1"], resources: [
                r("resource.k8s.io", "v1", "deviceclasses", "DeviceClass", namespaced: false, generation: true),
                r("resource.k8s.io", "v1", "resourceclaims", "ResourceClaim", sub: [status("ResourceClaim")], generation: true),
                r("resource.k8s.io", "v1", "resourceclaimtemplates", "ResourceClaimTemplate", generation: true),
                r("resource.k8s.io", "v1", "resourceslices", "ResourceSlice", namespaced: false, generation: true),
            ]),
            GroupDefinition(name: "flowcontrol.apiserver.k8s.io", versions: ["v1"], resources: [
                r("flowcontrol.apiserver.k8s.io", "v1", "flowschemas", "FlowSchema", namespaced: false,
                  sub: [status("FlowSchema")], generation: true),
                r("flowcontrol.apiserver.k8s.io", "v1", "prioritylevelconfigurations", "PriorityLevelConfiguration",
                  namespaced: false, sub: [status("PriorityLevelConfiguration")], generation: true),
            ]),
        ]
    }()
}

private let base64Alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

/// Standard base64 with padding.
func base64(_ bytes: [UInt8], urlSafe: Bool = false, padded: Bool = true) -> String {
    var out: [UInt8] = []
    out.reserveCapacity((bytes.count + 2) / 3 * 4)
    var i = 0
    func sym(_ v: UInt8) -> UInt8 {
        let c = base64Alphabet[Int(v)]
        if urlSafe {
            if c == UInt8(ascii: "+") { return UInt8(ascii: "-") }
            if c == UInt8(ascii: "/") { return UInt8(ascii: "_") }
        }
        return c
    }
    while i + 3 <= bytes.count {
        let b0 = bytes[i], b1 = bytes[i + 1], b2 = bytes[i + 2]
        out += [sym(b0 >> 2), sym(((b0 & 0x3) << 4) | (b1 >> 4)), sym(((b1 & 0xF) << 2) | (b2 >> 6)), sym(b2 & 0x3F)]
        i += 3
    }
    let rest = bytes.count - i
    if rest == 1 {
        let b0 = bytes[i]
        out += [sym(b0 >> 2), sym((b0 & 0x3) << 4)]
        if padded { out += [UInt8(ascii: "="), UInt8(ascii: "=")] }
    } else if rest == 2 {
        let b0 = bytes[i], b1 = bytes[i + 1]
        out += [sym(b0 >> 2), sym(((b0 & 0x3) << 4) | (b1 >> 4)), sym((b1 & 0xF) << 2)]
        if padded { out.append(UInt8(ascii: "=")) }
    }
    return String(decoding: out, as: UTF8.self)
}

/// Decodes standard or URL-safe base64, padded or not.
func base64Decode(_ text: String) -> [UInt8]? {
    var values: [UInt8] = []
    for c in text.utf8 {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): values.append(c - UInt8(ascii: "A"))
        case UInt8(ascii: "a")...UInt8(ascii: "z"): values.append(c - UInt8(ascii: "a") + 26)
        case UInt8(ascii: "0")...UInt8(ascii: "9"): values.append(c - UInt8(ascii: "0") + 52)
        case UInt8(ascii: "+"), UInt8(ascii: "-"): values.append(62)
        case UInt8(ascii: "/"), UInt8(ascii: "_"): values.append(63)
        case UInt8(ascii: "="): continue
        default: return nil
        }
    }
    if values.count % 4 == 1 { return nil }
    var out: [UInt8] = []
    var i = 0
    while i < values.count {
        let chunk = Array(values[i..<min(i + 4, values.count)])
        out.append((chunk[0] << 2) | (chunk[1] >> 4))
        if chunk.count > 2 { out.append(((chunk[1] & 0xF) << 4) | (chunk[2] >> 2)) }
        if chunk.count > 3 { out.append(((chunk[2] & 0x3) << 6) | chunk[3]) }
        i += 4
    }
    return out
}
