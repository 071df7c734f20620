import BridgeCore
import CoreMetrics
import Foundation
import KubeInformer
import NIOCore
import Prometheus

/// What the operations endpoints answer, from the runtime's live state.
extension BridgeRuntime {
    func respond(to path: String) async -> OperationsServer.Response {
        switch path {
        case "/healthz", "/livez":
            return OperationsServer.Response(body: ByteBuffer(string: "ok\n"))
        case "/readyz":
            let problems = notReady()
            return problems.isEmpty
                ? OperationsServer.Response(body: ByteBuffer(string: "ok\n"))
                : OperationsServer.Response(status: .serviceUnavailable, body: ByteBuffer(string: problems.joined(separator: "\n") + "\n"))
        case "/metrics":
            guard let registry = metricsRegistry else {
                return OperationsServer.Response(status: .notFound, body: ByteBuffer(string: "metrics are not collected in this process\n"))
            }
            await sampleGauges()
            return OperationsServer.Response(contentType: "text/plain; version=0.0.4; charset=utf-8", body: ByteBuffer(bytes: registry.emitToBuffer()))
        case "/status":
            return OperationsServer.Response(contentType: "application/json", body: await statusDocument())
        default:
            return OperationsServer.Response(status: .notFound, body: ByteBuffer(string: "not found; try /metrics, /healthz, /readyz or /status\n"))
        }
    }

    /// Why kubebridge is not ready, or nothing when it is: discovery done, every watch past its
    /// first list (or found forbidden or failing, which is reported but does not hold readiness
    /// up), every sink that can tell connected.
    func notReady() -> [String] {
        var problems: [String] = []
        if !supervisor.hasDiscovered { problems.append("discovery has not succeeded yet") }
        let starting = supervisor.observer.states.filter { $0.value == .starting }.map(\.key)
        if !starting.isEmpty {
            problems.append("\(starting.count) watches still listing: \(starting.prefix(5).map { "\($0.resource)" }.joined(separator: ", "))")
        } else if !supervisor.isReady, supervisor.hasDiscovered {
            problems.append("watches are starting")
        }
        for sink in sinks where sink.isConnected == false {
            problems.append("sink \(sink.name) is not connected")
        }
        for pipeline in bridge.pipelines {
            if case .stopped(let reason) = pipeline.status { problems.append("sink \(pipeline.sink.name) stopped: \(reason)") }
        }
        return problems
    }

    /// Gauges are read at scrape time: what they show is the state now.
    func sampleGauges() async {
        for pipeline in bridge.pipelines {
            let dimensions = [("sink", pipeline.sink.name)]
            Gauge(label: MetricName.bufferedEvents, dimensions: dimensions).record(pipeline.buffered)
            Gauge(label: MetricName.bufferedBytes, dimensions: dimensions).record(pipeline.bufferedBytes)
            Gauge(label: MetricName.bufferCapacity, dimensions: dimensions).record(pipeline.bufferCapacity)
            if let connected = pipeline.sink.isConnected {
                Gauge(label: MetricName.sinkUp, dimensions: dimensions).record(connected ? 1 : 0)
            }
        }
        var ages: [String: Double] = [:]
        for (scope, age) in await checkpointer.ages() {
            ages[scope.resource.metricLabel] = max(ages[scope.resource.metricLabel] ?? 0, Self.seconds(age))
        }
        for (resource, age) in ages {
            Gauge(label: MetricName.checkpointAge, dimensions: [("resource", resource)]).record(age)
        }
        let states = supervisor.observer.states
        Gauge(label: MetricName.watchedResources).record(supervisor.watchedResources.count)
        Gauge(label: MetricName.forbiddenResources).record(Set(states.filter { $0.value == .forbidden }.map(\.key.resource)).count)
        Gauge(label: MetricName.leader).record(1)
    }

    /// Per watch: its state, checkpoint, age and lag; per sink: its buffer and counts.
    func statusDocument() async -> ByteBuffer {
        let ages = await checkpointer.ages()
        let states = supervisor.observer.states
        var watches: [[String: Any]] = []
        for scope in supervisor.watchedScopes {
            var entry: [String: Any] = ["resource": scope.resource.metricLabel, "state": Self.describe(states[scope])]
            if let namespace = scope.namespace { entry["namespace"] = namespace }
            if let watermark = bridge.watermark(of: scope) ?? resumedFrom[scope] { entry["checkpoint"] = watermark }
            if let age = ages[scope] { entry["checkpointAgeSeconds"] = (Self.seconds(age) * 1000).rounded() / 1000 }
            entry["unconfirmed"] = bridge.unconfirmed(in: scope)
            watches.append(entry)
        }
        let sinks: [[String: Any]] = bridge.pipelines.map { pipeline in
            var entry: [String: Any] = ["name": pipeline.sink.name, "buffered": pipeline.buffered, "delivered": pipeline.delivered,
                                        "retried": pipeline.retried, "deadLettered": pipeline.deadLettered]
            if case .stopped(let reason) = pipeline.status { entry["stopped"] = reason }
            if let connected = pipeline.sink.isConnected { entry["connected"] = connected }
            return entry
        }
        let document: [String: Any] = ["ready": notReady().isEmpty, "received": bridge.received, "watches": watches, "sinks": sinks]
        let data = (try? JSONSerialization.data(withJSONObject: document, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return ByteBuffer(bytes: data)
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    static func describe(_ state: WatchState?) -> String {
        switch state {
        case nil, .starting: "starting"
        case .watching: "watching"
        case .forbidden: "forbidden"
        case .retrying(let why): "retrying (\(why))"
        case .removed: "removed"
        }
    }
}
