import BridgeCore
import CoreMetrics
import Foundation
import KubeInformer
import KubeModel
import NIOCore
import Prometheus
import Synchronization

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
            if metricsRegistry != nil { await sampleGauges() }
            return OperationsEndpoints.metricsResponse(metricsRegistry)
        case "/status":
            return OperationsServer.Response(contentType: "application/json", body: await statusDocument())
        default:
            return OperationsServer.Response(status: .notFound, body: ByteBuffer(string: "not found; try /metrics, /healthz, /readyz or /status\n"))
        }
    }

    /// Why kubebridge is not ready, or nothing when it is: discovery done; every watch running
    /// now (one per resource, or per namespace where cluster-wide access is forbidden) past its
    /// first list and not failing (a forbidden one is reported in `/status` but does not hold
    /// readiness up); every sink that can tell connected, not stopped, and confirming events
    /// while some wait for it.
    func notReady(now: ContinuousClock.Instant = .now) -> [String] {
        var problems: [String] = []
        if !supervisor.hasDiscovered { problems.append("discovery has not succeeded yet") }
        let states = supervisor.observer.states
        var starting: [WatchScope] = []
        var failing: [(WatchScope, String)] = []
        for scope in supervisor.watchedScopes {
            switch states[scope] {
            case nil, .starting: starting.append(scope)
            case .retrying(let why): failing.append((scope, why))
            case .watching, .forbidden, .removed: break
            }
        }
        if !starting.isEmpty {
            problems.append("\(starting.count) watches still listing: \(starting.prefix(5).map(Self.describe).joined(separator: ", "))")
        }
        if !failing.isEmpty {
            problems.append("\(failing.count) watches failing: \(failing.prefix(5).map { "\(Self.describe($0.0)) (\($0.1))" }.joined(separator: "; "))")
        }
        for sink in sinks where sink.isConnected == false {
            problems.append("sink \(sink.name) is not connected")
        }
        for pipeline in bridge.pipelines {
            if case .stopped(let reason) = pipeline.status {
                problems.append("sink \(pipeline.sink.name) stopped: \(reason)")
            } else if let since = deliveryStalls.stalled(sink: pipeline.sink.name, delivered: pipeline.delivered, waiting: pipeline.buffered, now: now) {
                problems.append("sink \(pipeline.sink.name) has confirmed nothing for \(since.spoken) while \(pipeline.buffered) events wait")
            }
        }
        return problems
    }

    static func describe(_ scope: WatchScope) -> String {
        scope.namespace.map { "\(scope.resource) in \($0)" } ?? "\(scope.resource)"
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
        for (scope, age) in ledger.ages() {
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
        let ages = ledger.ages()
        let states = supervisor.observer.states
        var watches: [[String: Any]] = []
        for scope in supervisor.watchedScopes {
            var entry: [String: Any] = ["resource": scope.resource.metricLabel, "state": Self.describe(states[scope])]
            if let namespace = scope.namespace { entry["namespace"] = namespace }
            if let failure = supervisor.observer.lastFailure(of: scope) { entry["lastError"] = failure }
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
        let connections = client.connections
        let problems = notReady()
        let document: [String: Any] = [
            "ready": problems.isEmpty, "phase": "bridging", "notReady": problems, "received": bridge.received, "watches": watches, "sinks": sinks,
            "connections": ["watches": connections.streams, "requestsHTTP2": connections.requestsHTTP2, "requestsHTTP1": connections.requestsHTTP1],
        ]
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

/// Whether a sink has confirmed nothing for `limit` while events wait for it: a stall that a
/// retrying sink does not report itself (a broker that accepts connections but never acknowledges,
/// an endpoint that hangs). Fed each time readiness is asked, with the time of asking.
struct DeliveryStall {
    let limit: Duration
    private var unchangedSince: (delivered: Int, since: ContinuousClock.Instant)?

    init(limit: Duration) {
        self.limit = limit
    }

    /// How long nothing has been confirmed, once that is `limit` or more; nil otherwise.
    mutating func observe(delivered: Int, waiting: Int, now: ContinuousClock.Instant) -> Duration? {
        guard waiting > 0 else {
            unchangedSince = nil
            return nil
        }
        guard let unchanged = unchangedSince, unchanged.delivered == delivered else {
            unchangedSince = (delivered, now)
            return nil
        }
        let stalled = now - unchanged.since
        return stalled >= limit ? stalled : nil
    }
}

/// The stall of each sink, kept between readiness checks.
final class DeliveryStalls: Sendable {
    private let stalls: Mutex<[String: DeliveryStall]>
    let limit: Duration

    init(limit: Duration) {
        self.limit = limit
        stalls = Mutex([:])
    }

    func stalled(sink: String, delivered: Int, waiting: Int, now: ContinuousClock.Instant) -> Duration? {
        stalls.withLock { stalls in
            var stall = stalls[sink] ?? DeliveryStall(limit: limit)
            defer { stalls[sink] = stall }
            return stall.observe(delivered: delivered, waiting: waiting, now: now)
        }
    }
}
