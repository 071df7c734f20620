import BridgeCore
import CoreMetrics
import Foundation
import KubeAPI
import KubeModel
import Logging
import NIOCore
import Prometheus
import UnixSignals

extension BridgeRuntime {
    /// kubebridge as one of several replicas: it stands by, answering `/healthz`, `/readyz` and
    /// `/metrics` (`kubebridge_leader` 0) on `endpoints`, until it holds the lease; then it opens its sinks,
    /// loads the shared checkpoint and bridges, renewing the lease. SIGTERM while standing by
    /// returns at once; while leading, it stops gracefully and releases the lease, so that a
    /// successor need not wait for it to expire. A lost lease (or a checkpoint another replica
    /// claimed) calls `mustStop`, which must end the process: another replica may be bridging
    /// already.
    public static func runElected(configuration: Configuration, election: LeaderElectionOptions, logger: Logger,
                                  metrics: PrometheusCollectorRegistry?, endpoints: OperationsEndpoints?, mustStop: @escaping @Sendable (any Error) -> Void) async throws {
        let kubeConfiguration = try KubeConfigLoader.load(kubeconfig: configuration.cluster.kubeconfig, context: configuration.cluster.context)
        let client = try KubeClient(configuration: kubeConfiguration, logger: logger)
        let elector = try LeaderElector(client: client, options: election, logger: logger)
        Gauge(label: MetricName.leader).record(0)
        let acquired: Bool
        do {
            endpoints?.answer { path in await standbyResponse(path, elector: elector, metrics: metrics) }
            acquired = try await standBy(until: elector, logger: logger)
        } catch {
            try? await client.shutdown()
            throw error
        }
        guard acquired else {
            try await client.shutdown()
            return
        }
        endpoints?.answerNotReady("taking over: opening the sinks and loading the checkpoint", phase: "taking over")
        do {
            let runtime = try await BridgeRuntime(configuration: configuration, logger: logger, metrics: metrics, endpoints: endpoints, mustStop: mustStop)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await runtime.run() }
                group.addTask {
                    do {
                        try await elector.hold()
                    } catch let lost as LeadershipLost {
                        mustStop(lost)
                        throw lost
                    }
                }
                try await group.next()
                group.cancelAll()
            }
        } catch {
            await elector.release()
            try? await client.shutdown()
            throw error
        }
        await elector.release()
        try await client.shutdown()
    }

    /// Waits until the lease is this replica's (true) or a signal came (false).
    static func standBy(until elector: LeaderElector, logger: Logger) async throws -> Bool {
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        return try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await elector.acquire()
                return true
            }
            group.addTask {
                for await signal in signals {
                    logger.info("\(signal) while standing by: stopping")
                    return false
                }
                return false
            }
            let first = try await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    static func standbyResponse(_ path: String, elector: LeaderElector, metrics: PrometheusCollectorRegistry?) async -> OperationsServer.Response {
        switch path {
        case "/healthz", "/livez", "/readyz":
            return OperationsServer.Response(body: ByteBuffer(string: "ok (standing by)\n"))
        case "/metrics":
            return OperationsEndpoints.metricsResponse(metrics)
        case "/status":
            let options = elector.options
            return OperationsServer.Response(contentType: "application/json", body: ByteBuffer(string: #"{"leader":false,"phase":"standing by","lease":"\#(options.namespace)/\#(options.name)","identity":"\#(options.identity)","watches":[],"sinks":[]}"#))
        default:
            return OperationsServer.Response(status: .notFound, body: ByteBuffer(string: "not found\n"))
        }
    }
}
