import Foundation

/// Generates realistic activity on a test API server: objects of several kinds created, updated
/// and deleted across namespaces, and a CustomResourceDefinition installed (and optionally
/// removed) along the way. `kubebridge demo`, the tests and the benchmarks use it.
public struct Churn: Sendable {
    public struct Options: Sendable {
        /// Writes per second.
        public var rate: Double = 20
        public var namespaces = ["demo", "shop", "payments"]
        /// When to install the Widget CRD (nil: never).
        public var installCRDAfter: Duration? = .seconds(3)
        /// When to remove it again (nil: never).
        public var removeCRDAfter: Duration?
        /// How many objects of each kind a namespace holds at most.
        public var objectsPerKind = 5
        public var seed: UInt64 = 42

        public init() {}
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

    public static let widgetCRD = """
        {"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"widgets.example.com"},\
        "spec":{"group":"example.com","names":{"plural":"widgets","singular":"widget","kind":"Widget","listKind":"WidgetList",\
        "shortNames":["wg"]},"scope":"Namespaced","versions":[{"name":"v1","served":true,"storage":true,"schema":\
        {"openAPIV3Schema":{"type":"object","x-kubernetes-preserve-unknown-fields":true}},"subresources":{"status":{}}}]}}
        """

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

    static let widget = Kind(path: "apis/example.com/v1", apiVersion: "example.com/v1", kind: "Widget", prefix: "widget",
                             body: { #""spec":{"size":\#($0)}"# }, patch: { #"{"spec":{"size":\#($0)}}"# })

    /// Runs until cancelled.
    public func run() async throws -> Report {
        var report = Report()
        var random = SplitMix(seed: options.seed)
        for namespace in options.namespaces {
            _ = try await server.perform("POST", "/api/v1/namespaces", body: #"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"\#(namespace)"}}"#)
        }
        let start = ContinuousClock.now
        var crdInstalled = false
        var crdRemoved = false
        var step = 0
        let interval = Duration.seconds(1.0 / max(options.rate, 0.1))
        while !Task.isCancelled {
            let elapsed = ContinuousClock.now - start
            if !crdInstalled, let after = options.installCRDAfter, elapsed >= after {
                _ = try await server.perform("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body: Self.widgetCRD)
                report.writes["customresourcedefinitions create", default: 0] += 1
                crdInstalled = true
                try? await Task.sleep(for: .milliseconds(200))
            }
            if crdInstalled, !crdRemoved, let after = options.removeCRDAfter, elapsed >= after {
                _ = try await server.perform("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
                report.writes["customresourcedefinitions delete", default: 0] += 1
                crdRemoved = true
            }
            var kinds = Self.kinds
            if crdInstalled, !crdRemoved { kinds.append(Self.widget) }
            let kind = kinds[Int(random.next() % UInt64(kinds.count))]
            let namespace = options.namespaces[Int(random.next() % UInt64(options.namespaces.count))]
            let name = "\(kind.prefix)-\(random.next() % UInt64(options.objectsPerKind))"
            let collection = "/\(kind.path)/namespaces/\(namespace)/\(kind.kind.lowercased())s"
            step += 1
            let roll = random.next() % 10
            let verb: String
            if roll < 6 {
                let (status, _) = try await server.perform("PATCH", "\(collection)/\(name)", body: kind.patch(step), contentType: "application/merge-patch+json")
                if status == 404 {
                    _ = try await server.perform("POST", collection, body: #"{"apiVersion":"\#(kind.apiVersion)","kind":"\#(kind.kind)","metadata":{"name":"\#(name)","labels":{"app":"\#(kind.prefix)"}},\#(kind.body(step))}"#)
                    verb = "create"
                } else {
                    verb = "update"
                }
            } else if roll < 8 {
                let (status, _) = try await server.perform("POST", collection, body: #"{"apiVersion":"\#(kind.apiVersion)","kind":"\#(kind.kind)","metadata":{"name":"\#(name)","labels":{"app":"\#(kind.prefix)"}},\#(kind.body(step))}"#)
                verb = status == 201 ? "create" : "conflict"
            } else {
                let (status, _) = try await server.perform("DELETE", "\(collection)/\(name)")
                verb = status == 200 ? "delete" : "miss"
            }
            report.writes["\(kind.kind.lowercased())s \(verb)", default: 0] += 1
            try? await Task.sleep(for: interval)
        }
        return report
    }
}

/// A small deterministic generator, so that a churn run (or a test's generated input) can be repeated.
public struct SplitMix: RandomNumberGenerator, Sendable {
    var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
