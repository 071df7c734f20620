import ArgumentParser
import BridgeApp
import BridgeCore
import FileSink
import Foundation
import KubeAPI
import KubeTestServer
import Logging

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "See kubebridge work without a cluster, against its built-in test API server.",
        discussion: """
            Starts the test API server on 127.0.0.1 with generated activity (ConfigMaps, Secrets, \
            Deployments in several namespaces, and a CustomResourceDefinition installed a few \
            seconds in and removed again near the end), and runs the whole bridge against it with a \
            file sink. Each event is printed as it lands in the file, with a summary every few seconds.

            The events (CloudEvents, one JSON per line) and the checkpoints are left in the demo
            directory to look at afterwards.

            Examples:
              kubebridge demo
              kubebridge demo --duration 60 --rate 50 --directory /tmp/kubebridge-demo
            """)

    @Option(help: "How long to run, in seconds.")
    var duration = 15

    @Option(help: "Writes per second the generated activity makes.")
    var rate = 20.0

    @Option(help: "Where the events and the checkpoints go; emptied first.")
    var directory = "kubebridge-demo"

    func run() async throws {
        KubeBridge.bootstrapLogging(level: .warning)
        let root = URL(fileURLWithPath: directory)
        try? FileManager.default.removeItem(at: root)
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let server = try await KubeTestServer.start()
        let kubeconfig = root.appendingPathComponent("kubeconfig").path
        try server.writeKubeconfig(to: kubeconfig)
        var configuration = Configuration()
        configuration.cluster.name = "demo"
        configuration.cluster.kubeconfig = kubeconfig
        configuration.envelopes.cluster = "demo"
        configuration.stateDirectory = root.appendingPathComponent("state").path
        let events = root.appendingPathComponent("events.jsonl").path
        configuration.sinks = [Configuration.Sink(name: "demo-file", kind: .file(FileSink.Options(path: events)))]
        // The demo's endpoints are on a free port, so that it runs beside anything on 8080.
        configuration.operationsAddress = ("127.0.0.1", 0)
        do {
            let runtime = try await BridgeRuntime(configuration: configuration, logger: Logger(label: "kubebridge"))
            try await demo(runtime: runtime, server: server, events: events)
        } catch {
            try? await server.stop()
            throw fail(describe(error))
        }
        try await server.stop()
    }

    func demo(runtime: BridgeRuntime, server: KubeTestServer, events: String) async throws {
        print("==> test API server on \(server.url); the bridge writes CloudEvents to \(events)")
        var churnOptions = Churn.Options()
        churnOptions.rate = rate
        churnOptions.customResources = [.widgets(installAfter: .seconds(min(3, duration / 3)), removeAfter: duration > 6 ? .seconds(duration - 3) : nil)]
        let churn = Churn(server: server, options: churnOptions)
        let tail = EventTail(path: events)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await runtime.run(stopAfter: .seconds(duration + 1)) }
            let deadline = ContinuousClock.now + .seconds(10)
            while !runtime.supervisor.isSynced, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            print("==> watching \(runtime.supervisor.watchedResources.count) resources; \(tail.drain(printing: false)) events for what already existed")
            print("==> generated activity for \(duration) s, a CRD installed at +\(min(3, duration / 3)) s\(duration > 6 ? " and removed at +\(duration - 3) s" : "")")
            print("")
            group.addTask {
                _ = try await churn.run()
            }
            group.addTask {
                var tick = 0
                while !Task.isCancelled {
                    try await Task.sleep(for: .milliseconds(200))
                    tail.drain(printing: true)
                    tick += 1
                    if tick % 25 == 0 { print("    -- \(tail.count) events in the file so far") }
                }
            }
            try await group.next()
            group.cancelAll()
        }
        tail.drain(printing: true)
        print("")
        print("==> \(tail.summary())")
        print("==> the events are in \(events); the checkpoints in \(runtime.configuration.stateDirectory)/checkpoints.sqlite")
        print("==> next: `kubebridge discover` against your own cluster, then `kubebridge run --config FILE`")
    }
}

/// Follows the events file and prints what lands in it.
final class EventTail: @unchecked Sendable {
    let path: String
    private var offset: UInt64 = 0
    private var partial = Data()
    private(set) var count = 0
    private var byType: [String: Int] = [:]
    private var resources: Set<String> = []
    private let started = ContinuousClock.now
    private let lock = NSLock()

    init(path: String) {
        self.path = path
    }

    /// Reads the new lines; returns how many.
    @discardableResult
    func drain(printing: Bool) -> Int {
        lock.lock()
        defer { lock.unlock() }
        guard let handle = FileHandle(forReadingAtPath: path) else { return 0 }
        defer { try? handle.close() }
        try? handle.seek(toOffset: offset)
        let data = handle.readDataToEndOfFile()
        offset += UInt64(data.count)
        partial.append(data)
        var lines = 0
        while let newline = partial.firstIndex(of: 0x0A) {
            let line = partial[partial.startIndex..<newline]
            partial.removeSubrange(partial.startIndex...newline)
            guard let event = try? JSONSerialization.jsonObject(with: line) as? [String: Any] else { continue }
            lines += 1
            count += 1
            let type = event["changetype"] as? String ?? "?"
            byType[type, default: 0] += 1
            let resource = Self.resource(ofType: event["type"] as? String ?? "")
            resources.insert(resource)
            if printing {
                let elapsed = ContinuousClock.now - started
                let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                let name = (event["namespace"] as? String).map { "\($0)/" } ?? ""
                print(String(format: "+%6.2fs  ", seconds) + column(type, 9) + column(resource, 42)
                      + column(name + (event["name"] as? String ?? ""), 28) + "id=\(event["id"] as? String ?? "")")
            }
        }
        return lines
    }

    /// `apps/v1/deployments` from `io.kubebridge.apps.v1.deployments.added` (groups may hold dots).
    static func resource(ofType type: String) -> String {
        let parts = type.split(separator: ".").map(String.init)
        guard parts.count >= 6 else { return type }
        let group = parts[2..<(parts.count - 3)].joined(separator: ".")
        return "\(group)/\(parts[parts.count - 3])/\(parts[parts.count - 2])"
    }

    func summary() -> String {
        let types = ["added", "modified", "deleted", "synced"].map { "\(byType[$0] ?? 0) \($0)" }.joined(separator: ", ")
        return "\(count) events delivered (\(types)) across \(resources.count) resources"
    }

    /// Left-aligned in `width` characters, never cut.
    func column(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }
}
