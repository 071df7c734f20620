import Foundation
import Logging
import NIOCore
import Prometheus
import Synchronization

/// The operations endpoints for the life of the process. They are bound before the first request
/// to the API server and answered by the phase the process is in (waiting for the API server,
/// standing by, taking over, bridging), so that a probe never finds the port closed and the port
/// never moves: a liveness probe must not restart a replica that waits for an API server, and a
/// standby that takes over is probed on the same address.
public final class OperationsEndpoints: Sendable {
    public let server: OperationsServer
    let metrics: PrometheusCollectorRegistry?
    private let phase = ResponderBox()

    /// Binds the configured address, or returns nil when the configuration has none.
    public static func bind(_ configuration: Configuration, metrics: PrometheusCollectorRegistry?, logger: Logger) async throws -> OperationsEndpoints? {
        guard let address = configuration.operationsAddress else { return nil }
        let endpoints = try await OperationsEndpoints(host: address.host, port: address.port, metrics: metrics, logger: logger)
        logger.info("operations endpoints on http://\(address.host):\(endpoints.server.port) (/metrics /healthz /readyz /status)")
        return endpoints
    }

    init(host: String, port: Int, metrics: PrometheusCollectorRegistry?, logger: Logger) async throws {
        self.metrics = metrics
        let phase = self.phase
        server = try await OperationsServer(host: host, port: port, logger: logger) { path in await phase.respond(path) }
    }

    /// From now on, `respond` answers.
    public func answer(with respond: @escaping @Sendable (String) async -> OperationsServer.Response) {
        phase.set(respond)
    }

    /// Answers as a process that is alive but not ready, for `reason`: `/healthz` ok, `/readyz`
    /// 503 with the reason, `/metrics`, and a `/status` that says the same.
    public func answerNotReady(_ reason: String, phase name: String) {
        let metrics = self.metrics
        answer { path in
            switch path {
            case "/healthz", "/livez":
                return OperationsServer.Response(body: ByteBuffer(string: "ok\n"))
            case "/readyz":
                return OperationsServer.Response(status: .serviceUnavailable, body: ByteBuffer(string: reason + "\n"))
            case "/metrics":
                return Self.metricsResponse(metrics)
            case "/status":
                let document: [String: Any] = ["ready": false, "phase": name, "notReady": [reason], "watches": [Any](), "sinks": [Any]()]
                let data = (try? JSONSerialization.data(withJSONObject: document, options: [.sortedKeys])) ?? Data()
                return OperationsServer.Response(contentType: "application/json", body: ByteBuffer(bytes: data))
            default:
                return OperationsServer.Response(status: .notFound, body: ByteBuffer(string: "not found; try /metrics, /healthz, /readyz or /status\n"))
            }
        }
    }

    static func metricsResponse(_ metrics: PrometheusCollectorRegistry?) -> OperationsServer.Response {
        guard let metrics else { return OperationsServer.Response(status: .notFound, body: ByteBuffer(string: "metrics are not collected in this process\n")) }
        return OperationsServer.Response(contentType: "text/plain; version=0.0.4; charset=utf-8", body: ByteBuffer(bytes: metrics.emitToBuffer()))
    }
}

/// The answer of the moment: the operations server binds before what answers exists.
final class ResponderBox: Sendable {
    private let handler = Mutex<(@Sendable (String) async -> OperationsServer.Response)?>(nil)

    func set(_ respond: @escaping @Sendable (String) async -> OperationsServer.Response) {
        handler.withLock { $0 = respond }
    }

    func respond(_ path: String) async -> OperationsServer.Response {
        guard let respond = handler.withLock({ $0 }) else {
            return OperationsServer.Response(status: .serviceUnavailable, body: ByteBuffer(string: "starting\n"))
        }
        return await respond(path)
    }
}
