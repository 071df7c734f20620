import Foundation
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL

/// A faithful stand-in for kube-apiserver v1.36 on 127.0.0.1: discovery (aggregated and legacy),
/// CRUD, paginated lists, watches with bookmarks and 410s, CustomResourceDefinitions that come and
/// go, and fault switches. It answers as the transcripts in `Fixtures/apiserver` show a real server answers.
public final class KubeTestServer: Sendable {
    public struct Options: Sendable {
        /// HTTPS with a certificate made at start; false serves plain HTTP (HTTP/1.1 only).
        public var tls = true
        /// Offer `h2` before `http/1.1` through ALPN, as kube-apiserver does; false serves HTTP/1.1
        /// only, as a proxy in front of an API server may. `KUBEBRIDGE_TEST_HTTP1_ONLY=1` in the
        /// environment turns it off for every server a test run starts, so that the whole suite
        /// runs over either protocol.
        public var http2 = ProcessInfo.processInfo.environment["KUBEBRIDGE_TEST_HTTP1_ONLY"].map { $0.isEmpty || $0 == "0" } ?? true
        /// SETTINGS_MAX_CONCURRENT_STREAMS of each HTTP/2 connection (kube-apiserver: 100).
        public var maxConcurrentStreams = 100
        public var port = 0
        /// The periodic bookmark of long watches (about a minute on a real server).
        public var bookmarkInterval: TimeAmount = .seconds(60)
        /// The bookmark a real server sends shortly before timeoutSeconds.
        public var bookmarkBeforeTimeout: TimeAmount = .seconds(2)
        public var crdEstablishDelay: TimeAmount = .milliseconds(60)
        public var crdCleanupDelay: TimeAmount = .milliseconds(25)
        /// How long after its CRD is deleted an open watch on the custom resources is closed.
        public var crdWatchCloseDelay: TimeAmount = .seconds(1)
        /// Changes the watch cache keeps per resource; older resourceVersions answer 410.
        public var watchCacheCapacity = 100_000
        /// `v2` as in v1.36; empty for servers older than aggregated discovery.
        public var aggregatedDiscoveryVersions: Set<String> = ["v2"]
        /// Streaming lists (`sendInitialEvents=true`); false answers 422 as a server with the gate off.
        public var watchListEnabled = true
        public var namespaces = ["default", "kube-system", "kube-public", "kube-node-lease"]
        /// Keep every change ever made (compaction does not touch it), for checkers.
        public var recordHistory = false

        public init() {}
    }

    /// A user of the kubeconfigs this server writes.
    public enum KubeconfigUser: Sendable {
        case admin
        case viewer
        case token(String)
        case clientCertificate(user: String)
    }

    private let group: MultiThreadedEventLoopGroup
    private let channel: Channel
    private let state: NIOLoopBound<APIServerState>
    public let loop: EventLoop
    /// `https://127.0.0.1:PORT` (or http).
    public let url: String
    public let port: Int
    public let pki: TestPKI?
    public let adminToken: String
    public let viewerToken: String

    private init(group: MultiThreadedEventLoopGroup, channel: Channel, state: NIOLoopBound<APIServerState>, url: String,
                 port: Int, pki: TestPKI?, adminToken: String, viewerToken: String) {
        self.group = group
        self.loop = group.next()
        self.channel = channel
        self.state = state
        self.url = url
        self.port = port
        self.pki = pki
        self.adminToken = adminToken
        self.viewerToken = viewerToken
    }

    public static func start(_ options: Options = Options()) async throws -> KubeTestServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let pki = options.tls ? try TestPKI() : nil
        let adminToken = "admin-" + UUID().uuidString.lowercased()
        let viewerToken = "viewer-" + UUID().uuidString.lowercased()
        let state = try await loop.submit {
            let state = APIServerState(loop: loop, options: options)
            state.users[adminToken] = .admin(token: adminToken)
            state.users[viewerToken] = .viewer(token: viewerToken)
            state.certificateUsers["admin"] = .admin(token: "")
            return NIOLoopBound(state, eventLoop: loop)
        }.get()
        let sslContext: NIOSSLContext?
        if let pki {
            var tls = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(pki.server.certificatePEM.utf8)).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(pki.server.privateKeyPEM.utf8), format: .pem)))
            tls.certificateVerification = .optionalVerification
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(pki.caCertificatePEM.utf8)))
            tls.applicationProtocols = options.http2 ? ["h2", "http/1.1"] : ["http/1.1"]
            sslContext = try NIOSSLContext(configuration: tls)
        } else {
            sslContext = nil
        }
        @Sendable func configureHTTP1(_ channel: Channel) throws {
            // Framing headers are written by the handler, in Go's order and casing.
            var encoder = HTTPResponseEncoder.Configuration()
            encoder.automaticallySetFramingHeaders = false
            // No pipelining assistance: it stops reading while a response is open, and Go's server keeps
            // reading during a watch, so it sees a client's close_notify or FIN at once.
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true, withEncoderConfiguration: encoder)
            try channel.pipeline.syncOperations.addHandler(HTTPHandler(state: state.value, http2: false))
        }
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let connection = ServedConnection(channel: channel, streamLimit: options.maxConcurrentStreams)
                    state.value.connections[ObjectIdentifier(channel)] = connection
                    channel.closeFuture.whenComplete { _ in state.value.connections[ObjectIdentifier(channel)] = nil }
                    return NIOLoopBound(connection, eventLoop: channel.eventLoop)
                }.flatMap { connection in
                    guard let sslContext else { return channel.eventLoop.makeCompletedFuture { try configureHTTP1(channel) } }
                    do {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                    } catch {
                        return channel.eventLoop.makeFailedFuture(error)
                    }
                    guard options.http2 else { return channel.eventLoop.makeCompletedFuture { try configureHTTP1(channel) } }
                    return channel.configureHTTP2SecureUpgrade(
                        h2ChannelConfigurator: { channel in
                            channel.eventLoop.makeCompletedFuture {
                                // The handshake is done (ALPN chose h2): the streams share its client certificate.
                                let tlsUser = try channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self).peerCertificate
                                    .flatMap { try? $0.toDERBytes() }.flatMap(TestPKI.commonName(ofDER:))
                                try HTTP2Serving.configure(channel, connection: connection.value) { stream in
                                    try stream.pipeline.syncOperations.addHandler(HTTPHandler(state: state.value, http2: true, tlsUser: tlsUser))
                                }
                            }
                        },
                        http1ChannelConfigurator: { channel in channel.eventLoop.makeCompletedFuture { try configureHTTP1(channel) } })
                }
            }
        let channel = try await bootstrap.bind(host: "127.0.0.1", port: options.port).get()
        let port = channel.localAddress?.port ?? options.port
        let server = KubeTestServer(
            group: group, channel: channel, state: state, url: "\(options.tls ? "https" : "http")://127.0.0.1:\(port)",
            port: port, pki: pki, adminToken: adminToken, viewerToken: viewerToken)
        try await server.onLoop { state in
            state.port = port
            for namespace in options.namespaces { state.seedNamespace(namespace) }
        }
        return server
    }

    /// Stops as kube-apiserver shuts down: GOAWAY on every HTTP/2 connection, open watches ended,
    /// connections closed.
    public func stop() async throws {
        try? await onLoop { state in
            state.sendGoAway()
            for session in state.allSessions.values { session.cancel() }
        }
        try? await channel.close()
        try? await onLoop { state in
            for connection in state.connections.values { connection.channel.close(promise: nil) }
        }
        try await group.shutdownGracefully()
    }

    /// Runs `body` on the server's loop, where its state lives.
    func onLoop<T: Sendable>(_ body: @escaping @Sendable (APIServerState) throws -> T) async throws -> T {
        let state = self.state
        return try await loop.submit { try body(state.value) }.get()
    }

    // MARK: Administration

    /// etcd compaction at the current revision. With `rollWatchCache` (the default) the watch
    /// cache's window is dropped too, so watches from older resourceVersions get 410 Expired; without
    /// it they are still replayed from the cache, as transcript 62 shows a real server doing.
    public func compact(rollWatchCache: Bool = true) async throws {
        try await onLoop { $0.compact(rollWatchCache: rollWatchCache) }
    }

    /// The server's wall clock from now on: what timestamps (`creationTimestamp`, managedFields'
    /// `time`, events) are read from. managedFields times have whole seconds, so a test that
    /// needs two writes in two seconds sets the clock rather than waiting.
    public func setClock(_ clock: @escaping @Sendable () -> Date) async throws {
        try await onLoop { $0.clock = clock }
    }

    /// The newest resourceVersion (etcd revision).
    public func currentResourceVersion() async throws -> String {
        try await onLoop { String($0.revision) }
    }

    @discardableResult
    public func inject(_ rule: FaultRule) async throws -> FaultID {
        try await onLoop { state in
            let id = FaultID(value: state.nextFaultID)
            state.nextFaultID += 1
            state.faults.append((id, rule))
            return id
        }
    }

    public func removeFault(_ id: FaultID) async throws {
        try await onLoop { state in state.faults.removeAll { $0.0 == id } }
    }

    public func clearFaults() async throws {
        try await onLoop { $0.faults = [] }
    }

    /// Holds back every bookmark that falls due (periodic or before a timeout) until called again
    /// with false, when each watch that had one due sends it: a test that writes while a watch is
    /// open then sees the bookmark after its writes, however slow the machine.
    public func pauseBookmarks(_ paused: Bool) async throws {
        try await onLoop { state in
            state.bookmarksPaused = paused
            if !paused { for session in state.allSessions.values { session.sendDueBookmark() } }
        }
    }

    /// Requests a `hold` fault stopped and that still wait.
    public func heldRequests() async throws -> Int {
        try await onLoop { $0.held.count }
    }

    /// Lets the requests a `hold` fault stopped go on.
    public func releaseHeld() async throws {
        try await onLoop { state in
            let held = state.held
            state.held = []
            for resume in held { resume() }
        }
    }

    public func addUser(_ user: TestUser) async throws {
        try await onLoop { $0.users[user.token] = user }
    }

    public func revokeToken(_ token: String) async throws {
        try await onLoop { $0.users[token] = nil }
    }

    /// Requests served so far, as `METHOD /path?sorted-query STATUS`.
    public func requestLog() async throws -> [String] {
        try await onLoop { $0.requestLog }
    }

    /// One change the server made, from the history (`Options.recordHistory`).
    public struct HistoryEntry: Sendable, Equatable {
        /// `configmaps`, `deployments.apps`, `widgets.example.com`.
        public var storage: String
        /// ADDED, MODIFIED or DELETED.
        public var type: String
        public var uid: String
        public var resourceVersion: Int64
        public var namespace: String?
        public var name: String
    }

    public func history() async throws -> [HistoryEntry] {
        try await onLoop { $0.history }
    }

    public func openWatchCount() async throws -> Int {
        try await onLoop { $0.allSessions.count }
    }

    /// An open watch as the server sees it.
    public struct WatchInfo: Sendable {
        public var resource: String
        public var group: String
        public var namespace: String?
        /// Events written to the connection so far (a reader that does not read holds this back).
        public var eventsSent: Int
    }

    public func openWatches() async throws -> [WatchInfo] {
        try await onLoop { state in
            state.allSessions.values.map {
                WatchInfo(resource: $0.plan.definition.resource, group: $0.plan.definition.group, namespace: $0.plan.namespace, eventsSent: $0.eventsSent)
            }
        }
    }

    /// Ends every open watch as at its timeout (a clean end of the chunked body).
    public func endAllWatches() async throws {
        try await onLoop { state in
            for session in state.allSessions.values { session.finish() }
        }
    }

    /// A connection the server holds open.
    public struct ConnectionInfo: Sendable {
        /// `h2` or `http/1.1`.
        public var applicationProtocol: String
        /// HTTP/2 streams open now.
        public var openStreams: Int
        /// HTTP/2 streams reset for going over the limit.
        public var streamsRefused: Int
    }

    public func connections() async throws -> [ConnectionInfo] {
        try await onLoop { state in
            state.connections.values.map {
                ConnectionInfo(applicationProtocol: $0.applicationProtocol, openStreams: $0.openStreams, streamsRefused: $0.streamsRefused)
            }
        }
    }

    /// What kube-apiserver does with `--goaway-chance` and at shutdown: a GOAWAY on every HTTP/2
    /// connection, so that clients take new requests elsewhere. With `endingStreams` the open
    /// watches on those connections end cleanly and the connections close, as at shutdown;
    /// without, they go on.
    public func goAway(endingStreams: Bool = false) async throws {
        try await onLoop { state in
            state.sendGoAway()
            guard endingStreams else { return }
            for session in state.allSessions.values { session.finish() }
            for connection in state.connections.values where connection.applicationProtocol == "h2" {
                connection.channel.close(promise: nil)
            }
        }
    }

    /// Closes every connection at once, mid-stream, as a dropped network path or a killed server does.
    public func dropConnections() async throws {
        try await onLoop { state in
            for connection in state.connections.values { connection.channel.close(promise: nil) }
        }
    }

    /// Performs a request as the admin user without going through HTTP (for churn generators and
    /// seeding); the answer is what the HTTP request would have got.
    public func perform(_ method: String, _ path: String, body: String? = nil, contentType: String = "application/json") async throws -> (status: Int, body: String) {
        let token = adminToken
        return try await onLoop { state in
            let (cleanPath, query) = HTTPHandler.split(uri: path)
            var headers = HTTPHeaders([("Authorization", "Bearer \(token)"), ("User-Agent", "kubebridge-test/1")])
            headers.add(name: "Content-Type", value: contentType)
            let request = APIRequest(method: HTTPMethod(rawValue: method), path: cleanPath, query: query, headers: headers,
                                     body: Array((body ?? "").utf8), tlsUser: nil)
            switch state.handle(request) {
            case .respond(let response): return (response.code, String(decoding: response.body, as: UTF8.self))
            default: return (0, "")
            }
        }
    }

    // MARK: Kubeconfig

    /// A kubeconfig for this server. Certificates are embedded (`-data`), so the file stands alone.
    public func kubeconfig(user: KubeconfigUser = .admin, contextName: String = "kubebridge-test") throws -> String {
        var userLines: [String]
        switch user {
        case .admin: userLines = ["    token: \(adminToken)"]
        case .viewer: userLines = ["    token: \(viewerToken)"]
        case .token(let token): userLines = ["    token: \(token)"]
        case .clientCertificate(let name):
            guard let pki else { throw TestServerError(message: "client certificates need TLS") }
            let identity = try pki.clientIdentity(user: name)
            userLines = [
                "    client-certificate-data: \(base64(Array(identity.certificatePEM.utf8)))",
                "    client-key-data: \(base64(Array(identity.privateKeyPEM.utf8)))",
            ]
        }
        var clusterLines = ["    server: \(url)"]
        if let pki { clusterLines.append("    certificate-authority-data: \(base64(Array(pki.caCertificatePEM.utf8)))") }
        return ([
            "apiVersion: v1",
            "kind: Config",
            "clusters:",
            "- name: \(contextName)",
            "  cluster:",
        ] + clusterLines + [
            "users:",
            "- name: \(contextName)-user",
            "  user:",
        ] + userLines + [
            "contexts:",
            "- name: \(contextName)",
            "  context:",
            "    cluster: \(contextName)",
            "    user: \(contextName)-user",
            "current-context: \(contextName)",
            "",
        ]).joined(separator: "\n")
    }

    public func writeKubeconfig(to path: String, user: KubeconfigUser = .admin) throws {
        try kubeconfig(user: user).write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// Registers a client-certificate user with full rights (a certificate for `admin` works from the start).
    public func allowCertificateUser(_ name: String) async throws {
        try await onLoop { $0.certificateUsers[name] = .admin(token: "") }
    }
}

public struct TestServerError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

extension APIServerState {
    func sendGoAway() {
        for connection in connections.values where connection.applicationProtocol == "h2" {
            let frame = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: connection.lastStreamID, errorCode: .noError, opaqueData: nil))
            connection.channel.writeAndFlush(frame, promise: nil)
            connection.sentGoAway()
        }
    }

    func seedNamespace(_ name: String) {
        let namespaces = BuiltinCatalog.groups[0].resources.first { $0.resource == "namespaces" }!
        let body = Array(#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"\#(name)"}}"#.utf8)
        _ = create(ResourceTarget(definition: namespaces), request: APIRequest(
            method: .POST, path: "/api/v1/namespaces", query: [:],
            headers: HTTPHeaders([("User-Agent", "kube-apiserver/v1.36.2")]), body: body, tlsUser: nil))
    }
}
