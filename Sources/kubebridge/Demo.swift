import ArgumentParser
import Foundation
import KubeAPI
import KubeTestServer

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "See kubebridge work without a cluster, against its built-in test API server.",
        discussion: """
            Starts the test API server on 127.0.0.1, discovers what it serves, then installs a \
            CustomResourceDefinition and removes it again, showing that discovery follows.

            Example:
              kubebridge demo
            """)

    func run() async throws {
        KubeBridge.bootstrapLogging(level: .warning)
        let server = try await KubeTestServer.start()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kubebridge-demo-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let kubeconfig = directory.appendingPathComponent("kubeconfig").path
        try server.writeKubeconfig(to: kubeconfig)
        let client = try KubeClient(configuration: try KubeConfigLoader.load(kubeconfig: kubeconfig))
        do {
            try await demo(client: client, server: server, kubeconfig: kubeconfig)
        } catch {
            try? await client.shutdown()
            try? await server.stop()
            throw fail(describe(error))
        }
        try await client.shutdown()
        try await server.stop()
        try? FileManager.default.removeItem(at: directory)
    }

    func demo(client: KubeClient, server: KubeTestServer, kubeconfig: String) async throws {
        print("==> test API server on \(server.url) (kubeconfig: \(kubeconfig))")
        let initial = try await client.discover()
        let watchable = initial.preferred.filter(\.isWatchable).sorted { ($0.group, $0.resource) < ($1.group, $1.resource) }
        print("==> discovery (\(initial.method.rawValue)): \(watchable.count) watchable resources")
        print(DiscoveryPrinter.table(watchable), terminator: "")

        let crds = GroupVersionResource(group: "apiextensions.k8s.io", version: "v1", resource: "customresourcedefinitions")
        print("==> creating CustomResourceDefinition widgets.example.com")
        _ = try await client.create(crds, namespace: nil, json: Self.widgetCRD)
        let widgets = GroupVersionResource(group: "example.com", version: "v1", resource: "widgets")
        let appeared = try await waitForDiscovery(client: client) { $0.contains { $0.gvr == widgets } }
        print("==> discovery now lists example.com/v1/widgets (after \(appeared) ms)")
        let widget = try await client.create(widgets, namespace: "default", json: #"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w1"},"spec":{"size":1}}"#)
        print("==> created Widget default/w1 at resourceVersion \(widget.metadata.resourceVersion)")
        print("==> deleting the CustomResourceDefinition")
        try await client.delete(crds, namespace: nil, name: "widgets.example.com")
        let vanished = try await waitForDiscovery(client: client) { !$0.contains { $0.gvr == widgets } }
        print("==> example.com/v1/widgets is gone from discovery (after \(vanished) ms)")
        print("==> done; next: `kubebridge discover --kubeconfig FILE` against your own cluster")
    }

    /// Polls discovery until `condition` holds; returns the milliseconds it took.
    func waitForDiscovery(client: KubeClient, _ condition: ([APIResource]) -> Bool) async throws -> Int {
        let start = ContinuousClock.now
        while true {
            if condition(try await client.discover().resources) {
                let elapsed = ContinuousClock.now - start
                return Int(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)
            }
            if ContinuousClock.now - start > .seconds(10) { throw fail("discovery did not change within 10 s") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    static let widgetCRD = """
        {"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"widgets.example.com"},\
        "spec":{"group":"example.com","names":{"plural":"widgets","singular":"widget","kind":"Widget","listKind":"WidgetList",\
        "shortNames":["wg"]},"scope":"Namespaced","versions":[{"name":"v1","served":true,"storage":true,"schema":\
        {"openAPIV3Schema":{"type":"object","properties":{"spec":{"type":"object","properties":{"size":{"type":"integer"},\
        "color":{"type":"string"}}},"status":{"type":"object","properties":{"phase":{"type":"string"}}}}}},\
        "subresources":{"status":{}}}]}}
        """
}
