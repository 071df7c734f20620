import AsyncHTTPClient
import Foundation
import KubeModel
import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import Synchronization

/// Options of a list request.
public struct ListOptions: Sendable {
    public var limit: Int?
    public var continueToken: String?
    public var resourceVersion: String?
    /// `Exact` or `NotOlderThan`.
    public var resourceVersionMatch: String?
    public var labelSelector: String?
    public var fieldSelector: String?

    public init(limit: Int? = nil, continueToken: String? = nil, resourceVersion: String? = nil, resourceVersionMatch: String? = nil,
                labelSelector: String? = nil, fieldSelector: String? = nil) {
        self.limit = limit
        self.continueToken = continueToken
        self.resourceVersion = resourceVersion
        self.resourceVersionMatch = resourceVersionMatch
        self.labelSelector = labelSelector
        self.fieldSelector = fieldSelector
    }

    var query: [(String, String)] {
        var query: [(String, String)] = []
        if let limit { query.append(("limit", String(limit))) }
        if let continueToken { query.append(("continue", continueToken)) }
        if let resourceVersion { query.append(("resourceVersion", resourceVersion)) }
        if let resourceVersionMatch { query.append(("resourceVersionMatch", resourceVersionMatch)) }
        if let labelSelector { query.append(("labelSelector", labelSelector)) }
        if let fieldSelector { query.append(("fieldSelector", fieldSelector)) }
        return query
    }
}

/// Options of a watch request.
public struct WatchOptions: Sendable {
    /// Where to start; nil or "0" asks the server for the current state first.
    public var resourceVersion: String?
    public var resourceVersionMatch: String?
    public var allowWatchBookmarks = true
    /// The server ends the watch after this long; client-go picks 5 to 10 minutes at random.
    public var timeoutSeconds: Int?
    /// A streaming list: the current state as ADDED events, then a bookmark marking its end.
    public var sendInitialEvents: Bool?
    public var labelSelector: String?
    public var fieldSelector: String?

    public init(resourceVersion: String? = nil, resourceVersionMatch: String? = nil, allowWatchBookmarks: Bool = true,
                timeoutSeconds: Int? = nil, sendInitialEvents: Bool? = nil, labelSelector: String? = nil, fieldSelector: String? = nil) {
        self.resourceVersion = resourceVersion
        self.resourceVersionMatch = resourceVersionMatch
        self.allowWatchBookmarks = allowWatchBookmarks
        self.timeoutSeconds = timeoutSeconds
        self.sendInitialEvents = sendInitialEvents
        self.labelSelector = labelSelector
        self.fieldSelector = fieldSelector
    }

    var query: [(String, String)] {
        var query: [(String, String)] = [("watch", "true")]
        if allowWatchBookmarks { query.append(("allowWatchBookmarks", "true")) }
        if let resourceVersion { query.append(("resourceVersion", resourceVersion)) }
        if let resourceVersionMatch { query.append(("resourceVersionMatch", resourceVersionMatch)) }
        if let sendInitialEvents { query.append(("sendInitialEvents", sendInitialEvents ? "true" : "false")) }
        if let timeoutSeconds { query.append(("timeoutSeconds", String(timeoutSeconds))) }
        if let labelSelector { query.append(("labelSelector", labelSelector)) }
        if let fieldSelector { query.append(("fieldSelector", fieldSelector)) }
        return query
    }
}

/// A Kubernetes API client without generated types: objects stay bytes, and only their metadata is read.
///
/// Lists and watches each take a connection of their own (HTTP/1.1), every other request shares
/// the connections of a second pool (HTTP/2 where the server offers it, as kube-apiserver does).
/// Over one HTTP/2 connection, AsyncHTTPClient queues what does not fit the server's stream limit
/// (kube-apiserver: 100), so the 101st watch, and every checkpoint write or Lease renewal behind
/// it, would wait for good; and its HTTP/2 streams read ahead of a consumer that has stopped, where
/// a TCP connection of its own holds the server back. kube-rs watches the same way.
public final class KubeClient: Sendable {
    public let configuration: KubeClientConfiguration
    /// Discovery, gets, writes, checkpoints and Leases: few at a time, never behind a watch.
    let requests: HTTPClient
    /// Lists and watches, a connection each.
    let streams: HTTPClient
    let connectionCounts: ConnectionCounter
    let credentials: CredentialProvider
    let logger: Logger
    private let host: String

    public init(configuration: KubeClientConfiguration, logger: Logger = Logger(label: "kubebridge.kubeapi")) throws {
        self.configuration = configuration
        self.logger = logger
        self.host = URL(string: configuration.server)?.host ?? configuration.server
        var tls = TLSConfiguration.makeClientConfiguration()
        if configuration.insecureSkipTLSVerify {
            tls.certificateVerification = .none
            logger.warning("TLS verification is OFF for \(configuration.server) (insecure-skip-tls-verify in \(configuration.origin)): anyone on the network path can read and change what kubebridge sees")
        } else if let pem = configuration.certificateAuthorityPEM {
            let source = configuration.certificateAuthoritySource ?? "the certificate authority"
            do {
                let certificates = try NIOSSLCertificate.fromPEMBytes(pem)
                guard !certificates.isEmpty else { throw KubeConfigError("no certificate in it") }
                // As client-go: a configured CA replaces the system roots rather than adding to them.
                tls.trustRoots = .certificates(certificates)
            } catch {
                throw KubeConfigError("\(source) does not hold a PEM certificate (\(error)); it must be the cluster CA in PEM form")
            }
        }
        if let certificatePEM = configuration.clientCertificatePEM, let keyPEM = configuration.clientKeyPEM {
            let source = configuration.clientCertificateSource ?? "the client certificate"
            do {
                tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(certificatePEM).map { .certificate($0) }
            } catch {
                throw KubeConfigError("\(source) does not hold a PEM certificate (\(error))")
            }
            do {
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: keyPEM, format: .pem))
            } catch {
                throw KubeConfigError("the client key for \(source) is not a PEM private key (\(error))")
            }
        }
        var http = HTTPClient.Configuration(
            tlsConfiguration: tls, redirectConfiguration: .disallow,
            timeout: .init(connect: configuration.connectTimeout.timeAmount, read: configuration.idleReadTimeout.timeAmount))
        http.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: configuration.maxConnections)
        // Watchers and the CLI back off on their own; a refused connection should say so at once.
        http.connectionPool.retryConnectionEstablishment = false
        http.decompression = .disabled
        if let proxy = configuration.proxyURL.flatMap(URL.init(string:)), let proxyHost = proxy.host {
            http.proxy = proxy.scheme == "socks5"
                ? .socksServer(host: proxyHost, port: proxy.port ?? 1080)
                : .server(host: proxyHost, port: proxy.port ?? 3128)
        }
        let counter = ConnectionCounter()
        var requests = http
        requests.httpVersion = .automatic
        requests.http1_1ConnectionDebugInitializer = { counter.opened($0, \.requestsHTTP1) }
        requests.http2ConnectionDebugInitializer = { counter.opened($0, \.requestsHTTP2) }
        var streams = http
        streams.httpVersion = .http1Only
        streams.http1_1ConnectionDebugInitializer = { counter.opened($0, \.streams) }
        self.requests = HTTPClient(eventLoopGroupProvider: .singleton, configuration: requests)
        self.streams = HTTPClient(eventLoopGroupProvider: .singleton, configuration: streams)
        self.connectionCounts = counter
        self.credentials = CredentialProvider(source: configuration.credentials, server: configuration.server, caPEM: configuration.certificateAuthorityPEM)
    }

    public func shutdown() async throws {
        async let streamsShut: Void = streams.shutdown()
        try await requests.shutdown()
        try await streamsShut
    }

    /// The connections open to the server now.
    public var connections: ConnectionCounts { connectionCounts.value }

    // MARK: Requests

    package struct Response {
        package var status: Int
        package var headers: [(String, String)]
        package var body: ByteBuffer
    }

    func url(_ path: String, query: [(String, String)]) -> String {
        var url = configuration.server + path
        if !query.isEmpty {
            url += "?" + query.map { "\($0.0)=\(PathEscaping.escapeQuery($0.1))" }.joined(separator: "&")
        }
        return url
    }

    /// Sends a request and returns the streaming response; a 401 gets one retry with fresh
    /// credentials when they can be refreshed (exec plugins, token files).
    func execute(
        method: HTTPMethod, path: String, query: [(String, String)] = [], body: ByteBuffer? = nil, contentType: String? = nil,
        accept: String = "application/json", extraHeaders: [(String, String)] = [], deadline: NIODeadline, streaming: Bool = false
    ) async throws -> HTTPClientResponse {
        let http = streaming ? streams : requests
        let target = url(path, query: query)
        let description = "\(method.rawValue) \(target)"
        var attempt = 0
        var lostConnections = 0
        while true {
            attempt += 1
            var request = HTTPClientRequest(url: target)
            request.method = method
            request.headers.add(name: "Accept", value: accept)
            request.headers.add(name: "User-Agent", value: configuration.userAgent)
            for (name, value) in extraHeaders { request.headers.add(name: name, value: value) }
            if let authorization = try await credentials.authorization() {
                request.headers.add(name: "Authorization", value: authorization)
            }
            if let body {
                request.headers.add(name: "Content-Type", value: contentType ?? "application/json")
                request.body = .bytes(body)
            }
            let response: HTTPClientResponse
            do {
                response = try await http.execute(request, deadline: deadline, logger: logger)
            } catch {
                if lostConnections < 2, Self.unanswered(error, method: method) {
                    lostConnections += 1
                    logger.debug("\(description) was not answered (\(error)); sending it again on another connection")
                    continue
                }
                throw mapTransportError(error, request: description)
            }
            if response.status == .unauthorized, attempt == 1, credentials.canRefresh {
                _ = try? await response.body.collect(upTo: 64 * 1024)
                await credentials.invalidate()
                logger.info("401 from \(host); fetching fresh credentials")
                continue
            }
            return response
        }
    }

    /// Sends a request and reads the whole answer; non-2xx answers become a `KubeAPIError`.
    package func send(
        method: HTTPMethod, path: String, query: [(String, String)] = [], body: ByteBuffer? = nil, contentType: String? = nil,
        accept: String = "application/json", extraHeaders: [(String, String)] = [], streaming: Bool = false
    ) async throws -> Response {
        let deadline = NIODeadline.now() + configuration.requestTimeout.timeAmount
        let response = try await execute(method: method, path: path, query: query, body: body, contentType: contentType,
                                         accept: accept, extraHeaders: extraHeaders, deadline: deadline, streaming: streaming)
        let description = "\(method.rawValue) \(url(path, query: query))"
        let bytes: ByteBuffer
        do {
            bytes = try await response.body.collect(upTo: configuration.maxResponseBytes)
        } catch is NIOTooManyBytesError {
            throw KubeAPIError(code: .responseTooLarge, httpStatus: Int(response.status.code),
                               message: "the answer is larger than \(configuration.maxResponseBytes) bytes; lower the page size", request: description)
        } catch {
            throw mapTransportError(error, request: description)
        }
        let headers = response.headers.map { ($0.name, $0.value) }
        guard (200..<300).contains(response.status.code) || response.status.code == 304 else {
            throw KubeAPIError.fromResponse(httpStatus: Int(response.status.code), headers: headers, body: bytes, request: description)
        }
        return Response(status: Int(response.status.code), headers: headers, body: bytes)
    }

    func mapTransportError(_ error: Error, request: String) -> Error {
        if error is CancellationError || error is KubeAPIError || error is KubeConfigError { return error }
        let text = String(describing: error)
        if let clientError = error as? HTTPClientError {
            switch clientError {
            case .deadlineExceeded, .readTimeout, .connectTimeout:
                return KubeAPIError(code: .timeout, message: "\(clientError) talking to \(configuration.server)", request: request)
            case .cancelled where Task.isCancelled:
                return CancellationError()
            case .cancelled:
                // Not this task's cancellation: the pool gave the request up with its connection.
                return KubeAPIError(code: .transport, message: "the connection to \(configuration.server) closed under the request; it is tried again on a new one", request: request)
            case .getConnectionFromPoolTimeout:
                return KubeAPIError(
                    code: .timeout,
                    message: "no connection to \(configuration.server) became free within \(configuration.connectTimeout.spoken) (every one was busy or could not be opened); it is tried again",
                    request: request)
            case .remoteConnectionClosed:
                return KubeAPIError(code: .transport, message: "the connection to \(configuration.server) closed unexpectedly; it is tried again on a new one", request: request)
            default:
                break
            }
        }
        if let closed = error as? NIOHTTP2Errors.StreamClosed {
            return KubeAPIError(code: .transport, message: Self.streamResetSentence(closed.errorCode, server: configuration.server), request: request)
        }
        if error is NIOHTTP2Errors.MaxStreamsViolation {
            return KubeAPIError(
                code: .transport,
                message: "more HTTP/2 streams were opened to \(configuration.server) than it allows on one connection; it is tried again",
                request: request)
        }
        if text.contains("CERTIFICATE_VERIFY_FAILED") || text.contains("certificate verify failed") || text.contains("unable to get local issuer")
            || text.contains("self signed certificate") || text.contains("self-signed certificate") {
            let hint = configuration.certificateAuthoritySource.map { "it is not signed by \($0)" } ?? "no certificate-authority is configured and the system roots do not trust it"
            return KubeAPIError(
                code: .tlsVerification,
                message: "the server certificate of \(host) did not verify: \(hint); set certificate-authority(-data) in the kubeconfig to the cluster's CA",
                request: request)
        }
        if text.contains("Hostname") || (text.contains("hostname") && text.contains("match")) {
            return KubeAPIError(code: .tlsVerification, message: "the server certificate is not valid for \(host): \(text)", request: request)
        }
        if text.contains("connection refused") || text.contains("Connection refused") || text.contains("ECONNREFUSED") {
            return KubeAPIError(code: .transport, message: "cannot connect to \(configuration.server): connection refused; is the cluster running and is the server address in \(configuration.origin) right?", request: request)
        }
        if text.contains("remoteConnectionClosed") || text.contains("connection reset") || text.contains("Connection reset") {
            return KubeAPIError(code: .transport, message: "the connection to \(configuration.server) closed unexpectedly", request: request)
        }
        if text.contains("getaddrinfo") || text.contains("NXDOMAIN") || text.contains("resolve") {
            return KubeAPIError(code: .transport, message: "cannot resolve \(host): \(text)", request: request)
        }
        return KubeAPIError(code: .transport, message: "\(text) (server \(configuration.server))", request: request)
    }

    /// Whether a failed request may go out again at once, as Go's transport resends: a stream the
    /// server refused was never worked on (REFUSED_STREAM, or one past a GOAWAY's last stream,
    /// which NIOHTTP2 ends with CANCEL), and a GET lost with its connection changes nothing.
    static func unanswered(_ error: Error, method: HTTPMethod) -> Bool {
        if let closed = error as? NIOHTTP2Errors.StreamClosed, closed.errorCode == .refusedStream { return true }
        guard method == .GET else { return false }
        if error is NIOHTTP2Errors.StreamClosed { return true }
        if let clientError = error as? HTTPClientError,
           clientError == .remoteConnectionClosed || (clientError == .cancelled && !Task.isCancelled) {
            return true
        }
        return false
    }

    /// What a stream reset by the server (RST_STREAM, or streams past a GOAWAY) means for the request.
    static func streamResetSentence(_ code: HTTP2ErrorCode, server: String) -> String {
        switch code {
        case .refusedStream:
            return "\(server) refused the request's HTTP/2 stream before working on it (REFUSED_STREAM, as after a GOAWAY); it is tried again on a new connection"
        case .protocolError:
            return "\(server) reset the request's HTTP/2 stream with PROTOCOL_ERROR, as kube-apiserver does to a stream past its limit of concurrent streams; it is tried again"
        case .cancel:
            return "\(server) cancelled the request's HTTP/2 stream (CANCEL), as it does when it ends a request early or shuts down; it is tried again"
        case .enhanceYourCalm:
            return "\(server) reset the request's HTTP/2 stream with ENHANCE_YOUR_CALM: it thinks kubebridge sends too much; it is tried again after a backoff"
        default:
            return "\(server) reset the request's HTTP/2 stream (error code \(code.networkCode)); it is tried again"
        }
    }

    // MARK: Objects

    public func get(_ gvr: GroupVersionResource, namespace: String?, name: String) async throws -> KubeObject {
        let path = gvr.collectionPath(namespace: namespace) + "/" + PathEscaping.escape(name)
        return try decodeObject(try await send(method: .GET, path: path), request: "GET \(path)")
    }

    /// A raw GET of any path, answered as bytes.
    public func getRaw(_ path: String, query: [(String, String)] = [], accept: String = "application/json") async throws -> ByteBuffer {
        try await send(method: .GET, path: path, query: query, accept: accept).body
    }

    public func create(_ gvr: GroupVersionResource, namespace: String?, json: String) async throws -> KubeObject {
        let path = gvr.collectionPath(namespace: namespace)
        return try decodeObject(try await send(method: .POST, path: path, body: ByteBuffer(string: json)), request: "POST \(path)")
    }

    public func replace(_ gvr: GroupVersionResource, namespace: String?, name: String, json: String) async throws -> KubeObject {
        let path = gvr.collectionPath(namespace: namespace) + "/" + PathEscaping.escape(name)
        return try decodeObject(try await send(method: .PUT, path: path, body: ByteBuffer(string: json)), request: "PUT \(path)")
    }

    /// A JSON merge patch (RFC 7386).
    public func mergePatch(_ gvr: GroupVersionResource, namespace: String?, name: String, json: String, subresource: String? = nil) async throws -> KubeObject {
        var path = gvr.collectionPath(namespace: namespace) + "/" + PathEscaping.escape(name)
        if let subresource { path += "/\(subresource)" }
        let response = try await send(method: .PATCH, path: path, body: ByteBuffer(string: json), contentType: "application/merge-patch+json")
        return try decodeObject(response, request: "PATCH \(path)")
    }

    /// Deletes an object; the answer is the Status kube-apiserver returns (or the object when deletion is deferred).
    @discardableResult
    public func delete(_ gvr: GroupVersionResource, namespace: String?, name: String) async throws -> ByteBuffer {
        let path = gvr.collectionPath(namespace: namespace) + "/" + PathEscaping.escape(name)
        return try await send(method: .DELETE, path: path).body
    }

    func decodeObject(_ response: Response, request: String) throws -> KubeObject {
        do {
            var head = ObjectHead()
            try response.body.withUnsafeReadableBytes { raw in
                var scanner = JSONScanner(raw)
                head = try ObjectHead.scan(&scanner)
            }
            return KubeObject(metadata: head.metadata, bytes: response.body)
        } catch {
            throw KubeAPIError(code: .malformedResponse, httpStatus: response.status, message: "the answer is not a JSON object: \(error)", request: request)
        }
    }

    // MARK: List and watch

    /// One page of a list.
    public func list(_ gvr: GroupVersionResource, namespace: String? = nil, options: ListOptions = ListOptions()) async throws -> ObjectList {
        let path = gvr.collectionPath(namespace: namespace)
        let response = try await send(method: .GET, path: path, query: options.query, streaming: true)
        do {
            return try ObjectList.decode(response.body)
        } catch {
            throw KubeAPIError(code: .malformedResponse, httpStatus: response.status, message: "the list of \(gvr) is not valid JSON: \(error)",
                               request: "GET \(url(path, query: options.query))")
        }
    }

    /// Reads a GET's body as it arrives, unparsed, chunk by chunk until `chunk` returns false or the
    /// body ends: what the server itself can deliver, for the benchmarks.
    package func readBody(_ path: String, query: [(String, String)] = [], _ chunk: (ByteBuffer) throws -> Bool) async throws {
        let response = try await execute(method: .GET, path: path, query: query, deadline: .now() + .hours(1), streaming: true)
        guard response.status.code == 200 else {
            throw KubeAPIError(code: .transport, httpStatus: Int(response.status.code), message: "GET \(path) answered \(response.status.code)", request: path)
        }
        for try await buffer in response.body where try !chunk(buffer) { return }
    }

    /// Opens a watch: the frames arrive as the server sends them, read from the chunked body line
    /// by line; nothing is read ahead of the consumer, so a slow consumer slows the server through TCP.
    public func watch(_ gvr: GroupVersionResource, namespace: String? = nil, options: WatchOptions = WatchOptions()) async throws -> WatchStream {
        let path = gvr.collectionPath(namespace: namespace)
        let seconds = Int64(options.timeoutSeconds ?? 3600) + 120
        let response = try await execute(method: .GET, path: path, query: options.query, deadline: .now() + .seconds(seconds), streaming: true)
        guard response.status.code == 200 else {
            let body = (try? await response.body.collect(upTo: 64 * 1024)) ?? ByteBuffer()
            throw KubeAPIError.fromResponse(httpStatus: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) },
                                            body: body, request: "watch \(gvr)")
        }
        return WatchStream(body: response.body, resource: gvr, maxLineBytes: configuration.maxWatchLineBytes, client: self)
    }
}

/// Connections open to the server, by pool.
public struct ConnectionCounts: Sendable, Equatable {
    /// Lists and watches: one connection each (HTTP/1.1).
    public var streams = 0
    /// Other requests over HTTP/2 (one connection carries them all).
    public var requestsHTTP2 = 0
    /// Other requests over HTTP/1.1 (a server or proxy that does not offer HTTP/2).
    public var requestsHTTP1 = 0

    public var total: Int { streams + requestsHTTP2 + requestsHTTP1 }
}

/// Counts connections as AsyncHTTPClient opens them and as they close.
final class ConnectionCounter: Sendable {
    private let counts = Mutex(ConnectionCounts())

    var value: ConnectionCounts { counts.withLock { $0 } }

    func opened(_ channel: Channel, _ pool: WritableKeyPath<ConnectionCounts, Int> & Sendable) -> EventLoopFuture<Void> {
        counts.withLock { $0[keyPath: pool] += 1 }
        channel.closeFuture.whenComplete { _ in self.counts.withLock { $0[keyPath: pool] -= 1 } }
        return channel.eventLoop.makeSucceededVoidFuture()
    }
}
