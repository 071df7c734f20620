import Foundation
import KubeAPI
import KubeModel
import KubeTestServer

/// A test API server and a client for it, over real sockets.
public struct TestCluster: Sendable {
    public let server: KubeTestServer
    public let client: KubeClient
    public let directory: URL

    public static let configmaps = GroupVersionResource(group: "", version: "v1", resource: "configmaps")
    public static let namespaces = GroupVersionResource(group: "", version: "v1", resource: "namespaces")
    public static let crds = GroupVersionResource(group: "apiextensions.k8s.io", version: "v1", resource: "customresourcedefinitions")
    public static let widgets = GroupVersionResource(group: "example.com", version: "v1", resource: "widgets")

    /// Starts a server and a client configured through a kubeconfig file, as a user would.
    public static func start(
        _ options: KubeTestServer.Options = KubeTestServer.Options(), user: KubeTestServer.KubeconfigUser = .admin,
        configure: (inout KubeClientConfiguration) -> Void = { _ in }
    ) async throws -> TestCluster {
        let server = try await KubeTestServer.start(options)
        let directory = try temporaryDirectory()
        let path = directory.appendingPathComponent("kubeconfig").path
        try server.writeKubeconfig(to: path, user: user)
        var configuration = try KubeConfigLoader.load(kubeconfig: path)
        configure(&configuration)
        let client = try KubeClient(configuration: configuration)
        return TestCluster(server: server, client: client, directory: directory)
    }

    public func stop() async throws {
        try await client.shutdown()
        try await server.stop()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Runs `body` with a fresh cluster and always stops it.
    public static func with<T>(
        _ options: KubeTestServer.Options = KubeTestServer.Options(), user: KubeTestServer.KubeconfigUser = .admin,
        configure: (inout KubeClientConfiguration) -> Void = { _ in },
        _ body: (TestCluster) async throws -> T
    ) async throws -> T {
        let cluster = try await start(options, user: user, configure: configure)
        do {
            let result = try await body(cluster)
            try await cluster.stop()
            return result
        } catch {
            try? await cluster.stop()
            throw error
        }
    }

    public func createConfigMap(_ name: String, namespace: String = "default", labels: [String: String] = [:], data: [String: String] = ["k": "v"]) async throws -> KubeObject {
        let labelJSON = labels.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\"\($0.value)\"" }.joined(separator: ",")
        let dataJSON = data.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\"\($0.value)\"" }.joined(separator: ",")
        return try await client.create(Self.configmaps, namespace: namespace, json: """
            {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"\(name)","labels":{\(labelJSON)}},"data":{\(dataJSON)}}
            """)
    }

    public static let widgetCRD = """
        {"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"widgets.example.com"},\
        "spec":{"group":"example.com","names":{"plural":"widgets","singular":"widget","kind":"Widget","listKind":"WidgetList"},\
        "scope":"Namespaced","versions":[{"name":"v1","served":true,"storage":true,"schema":{"openAPIV3Schema":{"type":"object",\
        "x-kubernetes-preserve-unknown-fields":true}},"subresources":{"status":{}}}]}}
        """

    /// Creates the Widget CRD and waits until discovery serves it.
    public func installWidgetCRD() async throws {
        _ = try await client.create(Self.crds, namespace: nil, json: Self.widgetCRD)
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if try await client.discover().resources.contains(where: { $0.gvr == Self.widgets }) { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestFailure(message: "the Widget CRD did not become served")
    }
}

public func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("kubebridge-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

public struct ConditionTimeout: Error, CustomStringConvertible {
    public var description: String
}

/// Polls until `condition` holds; throws when it does not within `timeout`. The limit is for a
/// condition that will never hold, so it is generous: a machine whose other core is busy must not
/// fail a test that is only slow.
public func waitUntil(timeout: Duration = .seconds(60), interval: Duration = .milliseconds(20), _ condition: () async throws -> Bool) async throws {
    let start = ContinuousClock.now
    while ContinuousClock.now - start < timeout {
        if try await condition() { return }
        try await Task.sleep(for: interval)
    }
    throw ConditionTimeout(description: "condition not met within \(timeout)")
}
