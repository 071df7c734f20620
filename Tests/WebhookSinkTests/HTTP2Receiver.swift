import Foundation
import KubeTestServer
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import Synchronization

/// An https endpoint that offers HTTP/2 and HTTP/1.1 by ALPN, with a certificate from a test CA,
/// and records the HTTP version of each request it answers 200.
final class HTTP2Receiver: Sendable {
    let group: MultiThreadedEventLoopGroup
    let channel: any Channel
    let caPEM: String
    let versions: Versions
    var url: String { "https://127.0.0.1:\(channel.localAddress?.port ?? 0)/events" }

    final class Versions: Sendable {
        let seen = Mutex<[String]>([])
    }

    private init(group: MultiThreadedEventLoopGroup, channel: any Channel, caPEM: String, versions: Versions) {
        self.group = group
        self.channel = channel
        self.caPEM = caPEM
        self.versions = versions
    }

    /// `protocols`: what ALPN offers, in preference order.
    static func start(protocols: [String] = ["h2", "http/1.1"]) async throws -> HTTP2Receiver {
        let pki = try TestPKI()
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(pki.server.certificatePEM.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(pki.server.privateKeyPEM.utf8), format: .pem)))
        tls.applicationProtocols = protocols
        let context = try NIOSSLContext(configuration: tls)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let versions = Versions()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                }.flatMap {
                    channel.configureCommonHTTPServerPipeline { stream in
                        stream.eventLoop.makeCompletedFuture {
                            try stream.pipeline.syncOperations.addHandler(Recorder(versions: versions))
                        }
                    }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return HTTP2Receiver(group: group, channel: channel, caPEM: pki.caCertificatePEM, versions: versions)
    }

    func stop() async throws {
        try await channel.close()
        try await group.shutdownGracefully()
    }

    final class Recorder: ChannelInboundHandler, Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let versions: Versions
        private let version = Mutex<HTTPVersion?>(nil)

        init(versions: Versions) {
            self.versions = versions
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                version.withLock { $0 = head.version }
            case .body:
                break
            case .end:
                let version = version.withLock { $0 } ?? .http1_1
                versions.seen.withLock { $0.append("\(version.major).\(version.minor)") }
                let head = HTTPResponseHead(version: version, status: .ok, headers: ["content-length": "0"])
                context.write(wrapOutboundOut(.head(head)), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}
