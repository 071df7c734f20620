import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// The operations endpoints: `/metrics` (Prometheus text format), `/healthz` (the process is
/// alive), `/readyz` (discovery done, watches established, sinks connected) and `/status` (JSON,
/// per watch: state, checkpoint, lag). Plain HTTP/1.1; bound to localhost by default outside a
/// cluster.
public final class OperationsServer: Service, Sendable {
    public struct Response: Sendable {
        public var status: HTTPResponseStatus
        public var contentType: String
        public var body: ByteBuffer

        public init(status: HTTPResponseStatus = .ok, contentType: String = "text/plain; charset=utf-8", body: ByteBuffer) {
            self.status = status
            self.contentType = contentType
            self.body = body
        }
    }

    typealias Connection = NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>
    let channel: NIOAsyncChannel<Connection, Never>
    let respond: @Sendable (_ path: String) async -> Response
    let logger: Logger

    /// The port it listens on (the one picked when the configuration said 0).
    public var port: Int { channel.channel.localAddress?.port ?? 0 }

    /// Binds now, so that a port in use is an error at start.
    public init(host: String, port: Int, logger: Logger, respond: @escaping @Sendable (_ path: String) async -> Response) async throws {
        self.respond = respond
        self.logger = logger
        do {
            channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.backlog, value: 64)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: host, port: port) { child in
                    child.eventLoop.makeCompletedFuture {
                        try child.pipeline.syncOperations.configureHTTPServerPipeline()
                        return try Connection(wrappingChannelSynchronously: child)
                    }
                }
        } catch {
            throw ConfigurationError(problems: ["operations.address \(host):\(port) cannot be bound: \(error)"])
        }
    }

    /// Serves until the graceful shutdown, which cancels open connections too.
    public func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                try await withThrowingDiscardingTaskGroup { group in
                    try await self.channel.executeThenClose { connections in
                        for try await connection in connections {
                            group.addTask { await self.serve(connection) }
                        }
                    }
                }
            }
        } catch is CancellationError {
            return
        }
    }

    private func serve(_ connection: Connection) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                var head: HTTPRequestHead?
                for try await part in inbound {
                    switch part {
                    case .head(let request):
                        head = request
                    case .body:
                        break
                    case .end:
                        guard let request = head else { continue }
                        let path = String(request.uri.split(separator: "?", maxSplits: 1).first ?? "")
                        let response = request.method == .GET || request.method == .HEAD
                            ? await respond(path)
                            : Response(status: .methodNotAllowed, body: ByteBuffer(string: "only GET\n"))
                        var headers = HTTPHeaders()
                        headers.add(name: "content-type", value: response.contentType)
                        headers.add(name: "content-length", value: String(response.body.readableBytes))
                        try await outbound.write(.head(HTTPResponseHead(version: request.version, status: response.status, headers: headers)))
                        if request.method != .HEAD { try await outbound.write(.body(.byteBuffer(response.body))) }
                        try await outbound.write(.end(nil))
                        head = nil
                    }
                }
            }
        } catch {
            logger.debug("an operations connection ended: \(error)")
        }
    }
}
