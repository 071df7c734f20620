import Foundation
import KubeModel

/// Generates realistic activity on a test API server: objects of several kinds created, updated
/// and deleted across namespaces, and a CustomResourceDefinition installed (and optionally
/// removed) along the way. `kubebridge demo`, the tests and the benchmarks use it.
public struct Churn: Sendable {
    public struct Options: Sendable {
        /// Writes per second.
        public var rate: Double = 20
        public var namespaces = ["demo", "shop", "payments"]
        /// The built-in kinds written to.
        public var kinds: KindSet = .standard
        /// Custom resources, each with its CRD installed and removed at its time.
        public var customResources: [CustomResource] = [.widgets(installAfter: .seconds(3))]
        /// How many objects of each kind a namespace holds at most.
        public var objectsPerKind = 5
        public var seed: UInt64 = 42

        public init() {}
    }

    public enum KindSet: Sendable {
        /// ConfigMaps, Secrets and Deployments.
        case standard
        /// Those and seventeen more namespaced built-ins of the core, apps, batch, networking and RBAC groups.
        case wide
    }

    /// A CRD and what happens to it during the churn.
    public struct CustomResource: Sendable {
        public var group: String
        public var kind: String
        /// When its CRD is installed (nil: never; zero: before the first write).
        public var installAfter: Duration?
        /// When it is removed again (nil: never).
        public var removeAfter: Duration?
        public var shortNames: [String] = []

        public init(group: String, kind: String, installAfter: Duration?, removeAfter: Duration? = nil) {
            self.group = group
            self.kind = kind
            self.installAfter = installAfter
            self.removeAfter = removeAfter
        }

        public static func widgets(installAfter: Duration?, removeAfter: Duration? = nil) -> Self {
            var widgets = Self(group: "example.com", kind: "Widget", installAfter: installAfter, removeAfter: removeAfter)
            widgets.shortNames = ["wg"]
            return widgets
        }

        var plural: String { kind.lowercased() + "s" }
        public var crdName: String { "\(plural).\(group)" }

        public var definition: String {
            """
            {"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"\(crdName)"},\
            "spec":{"group":"\(group)","names":{"plural":"\(plural)","singular":"\(kind.lowercased())","kind":"\(kind)","listKind":"\(kind)List",\
            "shortNames":[\(shortNames.map { "\"\($0)\"" }.joined(separator: ","))]},\
            "scope":"Namespaced","versions":[{"name":"v1","served":true,"storage":true,"schema":\
            {"openAPIV3Schema":{"type":"object","x-kubernetes-preserve-unknown-fields":true}},"subresources":{"status":{}}}]}}
            """
        }

        var churned: Kind {
            Kind(path: "apis/\(group)/v1", apiVersion: "\(group)/v1", kind: kind, prefix: kind.lowercased(),
                 body: { #""spec":{"size":\#($0)}"# }, patch: { #"{"spec":{"size":\#($0)}}"# })
        }
    }

    /// What the churn did, by `resource verb`.
    public struct Report: Sendable {
        public var writes: [String: Int] = [:]
        public var total: Int { writes.values.reduce(0, +) }
    }

    public let server: KubeTestServer
    public let options: Options

    public init(server: KubeTestServer, options: Options = Options()) {
        self.server = server
        self.options = options
    }

    public static let widgetCRD = CustomResource.widgets(installAfter: nil).definition

    struct Kind: Sendable {
        var path: String
        var apiVersion: String
        var kind: String
        var prefix: String
        var body: @Sendable (Int) -> String
        var patch: @Sendable (Int) -> String
    }

    static func password(_ step: Int) -> String {
        Data("secret-\(step)".utf8).base64EncodedString()
    }

    static let kinds: [Kind] = [
        Kind(path: "api/v1", apiVersion: "v1", kind: "ConfigMap", prefix: "settings",
             body: { #""data":{"revision":"\#($0)"}"# }, patch: { #"{"data":{"revision":"\#($0)"}}"# }),
        Kind(path: "api/v1", apiVersion: "v1", kind: "Secret", prefix: "credentials",
             body: { #""type":"Opaque","data":{"password":"\#(password($0))"}"# },
             patch: { #"{"data":{"password":"\#(password($0))"}}"# }),
        Kind(path: "apis/apps/v1", apiVersion: "apps/v1", kind: "Deployment", prefix: "web",
             body: { #""spec":{"replicas":\#($0 % 5 + 1),"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"web","image":"nginx:1.\#($0)"}]}}}"# },
             patch: { #"{"spec":{"replicas":\#($0 % 5 + 1)}}"# }),
    ]

    /// Namespaced built-ins written with metadata alone: an update changes an annotation.
    static let wideKinds: [Kind] = [
        ("api/v1", "v1", "Pod"), ("api/v1", "v1", "Service"), ("api/v1", "v1", "ServiceAccount"), ("api/v1", "v1", "Endpoints"),
        ("api/v1", "v1", "LimitRange"), ("api/v1", "v1", "PersistentVolumeClaim"), ("api/v1", "v1", "PodTemplate"),
        ("api/v1", "v1", "ReplicationController"), ("api/v1", "v1", "ResourceQuota"),
        ("apis/apps/v1", "apps/v1", "ControllerRevision"), ("apis/apps/v1", "apps/v1", "DaemonSet"),
        ("apis/apps/v1", "apps/v1", "ReplicaSet"), ("apis/apps/v1", "apps/v1", "StatefulSet"),
        ("apis/batch/v1", "batch/v1", "CronJob"), ("apis/batch/v1", "batch/v1", "Job"),
        ("apis/networking.k8s.io/v1", "networking.k8s.io/v1", "NetworkPolicy"),
        ("apis/rbac.authorization.k8s.io/v1", "rbac.authorization.k8s.io/v1", "Role"),
    ].map { path, apiVersion, kind in
        Kind(path: path, apiVersion: apiVersion, kind: kind, prefix: kind.lowercased(),
             body: { _ in "" },
             patch: { #"{"metadata":{"annotations":{"example.com/step":"\#($0)"}}}"# })
    }

    /// Runs until cancelled.
    public func run() async throws -> Report {
        var report = Report()
        var random = SplitMix64(seed: options.seed)
        for namespace in options.namespaces {
            _ = try await server.perform("POST", "/api/v1/namespaces", body: #"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"\#(namespace)"}}"#)
        }
        let start = ContinuousClock.now
        var installed = Set<String>()
        var removed = Set<String>()
        var step = 0
        let interval = Duration.seconds(1.0 / max(options.rate, 0.1))
        let builtIns = options.kinds == .wide ? Self.kinds + Self.wideKinds : Self.kinds
        while !Task.isCancelled {
            let elapsed = ContinuousClock.now - start
            for resource in options.customResources {
                if !installed.contains(resource.crdName), let after = resource.installAfter, elapsed >= after {
                    _ = try await server.perform("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body: resource.definition)
                    report.writes["customresourcedefinitions create", default: 0] += 1
                    installed.insert(resource.crdName)
                    try? await Task.sleep(for: .milliseconds(200))
                }
                if installed.contains(resource.crdName), !removed.contains(resource.crdName), let after = resource.removeAfter, elapsed >= after {
                    _ = try await server.perform("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/\(resource.crdName)")
                    report.writes["customresourcedefinitions delete", default: 0] += 1
                    removed.insert(resource.crdName)
                }
            }
            let kinds = builtIns + options.customResources.filter { installed.contains($0.crdName) && !removed.contains($0.crdName) }.map(\.churned)
            let kind = kinds[Int(random.next() % UInt64(kinds.count))]
            let namespace = options.namespaces[Int(random.next() % UInt64(options.namespaces.count))]
            let name = "\(kind.prefix)-\(random.next() % UInt64(options.objectsPerKind))"
            let collection = "/\(kind.path)/namespaces/\(namespace)/\(kind.kind.lowercased())s"
            let body = kind.body(step)
            let object = #"{"apiVersion":"\#(kind.apiVersion)","kind":"\#(kind.kind)","metadata":{"name":"\#(name)","labels":{"app":"\#(kind.prefix)"},"annotations":{"example.com/step":"\#(step)"}}\#(body.isEmpty ? "" : ",")\#(body)}"#
            step += 1
            let roll = random.next() % 10
            let verb: String
            if roll < 6 {
                let (status, _) = try await server.perform("PATCH", "\(collection)/\(name)", body: kind.patch(step), contentType: "application/merge-patch+json")
                if status == 404 {
                    let (created, _) = try await server.perform("POST", collection, body: object)
                    verb = created == 404 ? "gone" : "create"
                } else {
                    verb = "update"
                }
            } else if roll < 8 {
                let (status, _) = try await server.perform("POST", collection, body: object)
                verb = status == 201 ? "create" : status == 404 ? "gone" : "conflict"
            } else {
                let (status, _) = try await server.perform("DELETE", "\(collection)/\(name)")
                verb = status == 200 ? "delete" : "miss"
            }
            if verb == "gone", let resource = options.customResources.first(where: { $0.kind == kind.kind }) {
                // Someone else removed the CRD.
                removed.insert(resource.crdName)
            }
            report.writes["\(kind.kind.lowercased())s \(verb)", default: 0] += 1
            try? await Task.sleep(for: interval)
        }
        return report
    }
}
