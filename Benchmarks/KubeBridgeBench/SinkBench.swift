import ArgumentParser
import BridgeApp
import BridgeCore
import FileSink
import Foundation
import Histogram
import KubeModel
import Logging
import Synchronization

/// Times from registration (the bridge received the change) to acknowledgement (the sink
/// confirmed it), in an HDR histogram of microseconds.
final class LatencyProbe: BridgeProbe {
    private struct State {
        var started: [DeliveryLedger.Token: ContinuousClock.Instant] = [:]
        var latencies = Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
        var acknowledged = 0
    }

    private let state = Mutex(State())

    func registered(_ token: DeliveryLedger.Token) {
        let now = ContinuousClock.now
        state.withLock { $0.started[token] = now }
    }

    func acknowledged(_ tokens: [DeliveryLedger.Token], sink: Int) {
        let now = ContinuousClock.now
        state.withLock { state in
            for token in tokens {
                guard let start = state.started.removeValue(forKey: token) else { continue }
                let elapsed = now - start
                _ = state.latencies.record(UInt64(max(0, elapsed.seconds * 1_000_000)))
            }
            state.acknowledged += tokens.count
        }
    }

    var acknowledged: Int { state.withLock { $0.acknowledged } }

    func resetLatencies() { state.withLock { $0.latencies.reset() } }

    /// p50, p99, p999 in milliseconds.
    func percentiles() -> (Double, Double, Double) {
        state.withLock { state in
            func at(_ percentile: Double) -> Double { Double(state.latencies.valueAtPercentile(percentile)) / 1000 }
            return (at(50), at(99), at(99.9))
        }
    }
}

/// The two runs of a sink benchmark: an initial sync, then steady changes.
struct SinkRunOptions: ParsableArguments {
    @Option(help: "Objects listed at start (the initial sync is the throughput run).")
    var objects = 100_000

    @Option(help: "Changes per second of the steady run (latency).")
    var rate = 1000

    @Option(help: "Seconds of the steady run.")
    var seconds = 10

    @Option(help: "Where checkpoints go: sqlite, or kubernetes (ConfigMaps on the test API server, as replicas under leader election keep them).")
    var store = "sqlite"
}

/// What one bridge run measured.
struct BridgeMeasurement {
    var objects: Int
    var syncRate: Double
    var syncP50: Double
    var syncP99: Double
    var rate: Int
    var seconds: Int
    var p50: Double
    var p99: Double
    var p999: Double
    var baseline: Int
    var peak: Int

    /// The Markdown table rows, and the memory line.
    func report(sink: String) -> String {
        """
        | run | events | events/s | p50 | p99 | p999 |
        | --- | --- | --- | --- | --- | --- |
        \(String(format: "| initial sync into the %@ sink | %d | %.0f | %.1f ms | %.1f ms | |", sink, objects, syncRate, syncP50, syncP99))
        \(String(format: "| steady %d events/s for %d s | %d | %d | %.2f ms | %.2f ms | %.2f ms |", rate, seconds, rate * seconds, rate, p50, p99, p999))
        peak resident memory \(mib(peak)) (baseline \(mib(baseline))) with \(objects + rate * seconds) known objects
        """
    }
}

/// The whole bridge, in this process, against the server's `objects` ConfigMaps of 1 KiB: the
/// initial sync (throughput), then `rate` changes per second for `seconds` (latency).
func measureBridge(server: ServerProcess, sink: Configuration.Sink, objects: Int, rate: Int, seconds: Int, stateDirectory: String,
                   store: String = "sqlite") async throws -> BridgeMeasurement {
    var configuration = Configuration()
    if store == "kubernetes" {
        _ = try? await server.client.create(GroupVersionResource(group: "", version: "v1", resource: "namespaces"), namespace: nil,
                                            json: #"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"kubebridge"}}"#)
        configuration.checkpointStore = .kubernetes(namespace: "kubebridge", name: "kubebridge-checkpoint")
    }
    configuration.cluster.kubeconfig = server.kubeconfig
    configuration.stateDirectory = stateDirectory
    configuration.selection.include = ["core/v1/configmaps"]
    configuration.sinks = [sink]
    configuration.operationsAddress = nil
    let probe = LatencyProbe()
    let baseline = residentBytes()
    let runtime = try await BridgeRuntime(configuration: configuration, logger: benchLogger(), probe: probe)
    let task = Task { try await runtime.run() }
    var peak = baseline
    let started = ContinuousClock.now
    while probe.acknowledged < objects {
        peak = max(peak, residentBytes())
        try await Task.sleep(for: .milliseconds(20))
    }
    let synced = ContinuousClock.now - started
    let (syncP50, syncP99, _) = probe.percentiles()
    probe.resetLatencies()
    let steadyCount = rate * seconds
    let before = probe.acknowledged
    _ = try await server.control("generate", query: [("namespace", "steady"), ("count", String(steadyCount)), ("bytes", "1024"), ("rate", String(rate))])
    while probe.acknowledged < before + steadyCount {
        peak = max(peak, residentBytes())
        try await Task.sleep(for: .milliseconds(20))
    }
    let (p50, p99, p999) = probe.percentiles()
    task.cancel()
    _ = try? await task.value
    return BridgeMeasurement(objects: objects, syncRate: Double(objects) / synced.seconds, syncP50: syncP50, syncP99: syncP99, rate: rate, seconds: seconds,
                             p50: p50, p99: p99, p999: p999, baseline: baseline, peak: peak)
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

struct FileSinkBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "file-sink",
        abstract: "Changes of 1 KiB objects through the whole bridge into the file sink: throughput, latency, memory.")

    @OptionGroup var server: ServerOptions

    @OptionGroup var run: SinkRunOptions

    func run() async throws {
        let server = try await ServerProcess(binary: server.kubebridge)
        try await server.generate(count: run.objects, bytes: 1024)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kubebridge-bench-file-\(getpid())")
        try? FileManager.default.removeItem(at: directory)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let sink = Configuration.Sink(name: "file", kind: .file(FileSink.Options(path: directory.appendingPathComponent("events.jsonl").path)))
        let measured = try await measureBridge(server: server, sink: sink, objects: run.objects, rate: run.rate, seconds: run.seconds,
                                               stateDirectory: directory.appendingPathComponent("state").path, store: run.store)
        await server.stop()
        print(measured.report(sink: run.store == "sqlite" ? "file" : "file (checkpoints in ConfigMaps)"))
    }
}
