import ArgumentParser
import BridgeCore
import Foundation
import KubeAPI
import KubeInformer
import KubeTestServer
import Logging

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "See kubebridge work without a cluster, against its built-in test API server.",
        discussion: """
            Starts the test API server on 127.0.0.1 with generated activity (ConfigMaps, Secrets, \
            Deployments in several namespaces, and a CustomResourceDefinition installed a few \
            seconds in and removed again near the end), and prints every change kubebridge sees, live.

            Examples:
              kubebridge demo
              kubebridge demo --duration 60 --rate 50
            """)

    @Option(help: "How long to run, in seconds.")
    var duration = 15

    @Option(help: "Writes per second the generated activity makes.")
    var rate = 20.0

    func run() async throws {
        KubeBridge.bootstrapLogging(level: .warning)
        let server = try await KubeTestServer.start()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kubebridge-demo-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let kubeconfig = directory.appendingPathComponent("kubeconfig").path
        try server.writeKubeconfig(to: kubeconfig)
        let client = try KubeClient(configuration: try KubeConfigLoader.load(kubeconfig: kubeconfig))
        do {
            try await demo(client: client, server: server)
        } catch {
            try? await client.shutdown()
            try? await server.stop()
            throw fail(describe(error))
        }
        try await client.shutdown()
        try await server.stop()
    }

    func demo(client: KubeClient, server: KubeTestServer) async throws {
        let printer = ChangePrinter()
        print("==> test API server on \(server.url)")
        let discovery = try await client.discover()
        print("==> it serves \(discovery.preferred.filter(\.isWatchable).count) watchable resources (discovery: \(discovery.method.rawValue))")
        var options = InformerOptions()
        options.rediscoveryInterval = .seconds(30)
        let supervisor = InformerSupervisor(client: client, options: options, logger: Logger(label: "kubebridge.demo"))
        var churnOptions = Churn.Options()
        churnOptions.rate = rate
        churnOptions.installCRDAfter = .seconds(min(3, duration / 3))
        churnOptions.removeCRDAfter = duration > 6 ? .seconds(duration - 2) : nil
        let churn = Churn(server: server, options: churnOptions)
        print("==> watching every resource; generated activity for \(duration) s, a CRD installed at +\(min(3, duration / 3)) s\(duration > 6 ? " and removed at +\(duration - 2) s" : "")")
        print("")
        let report = try await withThrowingTaskGroup(of: Churn.Report?.self) { group in
            group.addTask {
                try await supervisor.run { event in await printer.print(event) }
                return nil
            }
            try await waitUntilReady(supervisor)
            await printer.markStart()
            group.addTask { try await churn.run() }
            try await Task.sleep(for: .seconds(duration))
            group.cancelAll()
            var report: Churn.Report?
            for try await result in group { if let result { report = result } }
            return report
        }
        print("")
        print("==> \(await printer.summary())")
        if let report { print("==> the generated activity made \(report.total) writes") }
        print("==> next: `kubebridge discover` against your own cluster")
    }

    func waitUntilReady(_ supervisor: InformerSupervisor) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while !supervisor.isSynced, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// Prints changes as they arrive and counts them.
actor ChangePrinter {
    private var counts: [String: Int] = [:]
    private var resources: Set<GroupVersionResource> = []
    private var started = ContinuousClock.now
    private var live = false

    func markStart() {
        started = ContinuousClock.now
        live = true
    }

    func print(_ event: ResourceEvent) {
        guard case .change(let change) = event else { return }
        counts[change.type.rawValue, default: 0] += 1
        resources.insert(change.resource)
        // The initial state of the cluster is counted, not printed: the live changes are the show.
        guard live else { return }
        let elapsed = ContinuousClock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let meta = change.metadata
        let name = meta.namespace.map { "\($0)/\(meta.name)" } ?? meta.name
        let line = String(format: "+%6.2fs  ", seconds) + Self.column(change.type.rawValue, 9) + Self.column(change.resource.description, 50)
            + Self.column(name, 28) + "rv=\(meta.resourceVersion)"
        Swift.print(line)
    }

    /// Left-aligned in `width` characters, never cut.
    static func column(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }

    func summary() -> String {
        let byType = ChangeType.allCases.map { "\(counts[$0.rawValue] ?? 0) \($0.rawValue)" }.joined(separator: ", ")
        return "\(counts.values.reduce(0, +)) changes (\(byType)) across \(resources.count) resources"
    }
}
