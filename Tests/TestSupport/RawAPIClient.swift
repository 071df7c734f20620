import AsyncHTTPClient
import Foundation
import KubeTestServer
import NIOCore
import NIOSSL
import Synchronization

/// An HTTP client that sends exactly the requests of a transcript and hands back exactly what
/// came on the wire (status, headers in order, body), to hold the test server to a real server's answers.
public final class RawAPIClient: Sendable {
    public struct Response: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: [UInt8]
        public var text: String { String(decoding: body, as: UTF8.self) }

        public func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }
    }

    let http: HTTPClient
    public let server: KubeTestServer
    /// Offers `h2` by ALPN (HTTP/1.1 only otherwise).
    public let http2: Bool

    public init(server: KubeTestServer, http2: Bool = false) throws {
        self.http2 = http2
        self.server = server
        var tls = TLSConfiguration.makeClientConfiguration()
        if let pki = server.pki {
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(pki.caCertificatePEM.utf8)))
        }
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
        configuration.httpVersion = http2 ? .automatic : .http1Only
        configuration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
        configuration.decompression = .disabled
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    public func shutdown() async throws {
        try await http.shutdown()
    }

    /// The transcript's placeholders turned into this server's tokens.
    public func authorization(for placeholder: String?) -> String? {
        guard let placeholder else { return nil }
        return placeholder
            .replacingOccurrences(of: "<viewer-token>", with: server.viewerToken)
            .replacingOccurrences(of: "<invalid-token>", with: "invalid-token")
            .replacingOccurrences(of: "<token>", with: server.adminToken)
    }

    public func request(_ method: String, _ target: String, headers: [(String, String)] = [], body: String? = nil) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: server.url + target)
        request.method = .init(rawValue: method)
        for (name, value) in headers {
            if name.lowercased() == "authorization" {
                if let value = authorization(for: value) { request.headers.add(name: name, value: value) }
            } else {
                request.headers.add(name: name, value: value)
            }
        }
        if !headers.contains(where: { $0.0.lowercased() == "authorization" }) {
            request.headers.add(name: "Authorization", value: "Bearer \(server.adminToken)")
        }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        return request
    }

    public func send(_ method: String, _ target: String, headers: [(String, String)] = [], body: String? = nil) async throws -> Response {
        let response = try await http.execute(request(method, target, headers: headers, body: body), timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 64 * 1024 * 1024)
        return Response(status: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) },
                        body: Array(buffer: bytes))
    }

    /// Replays a transcript's request, with its headers and body (after `rewriteBody`).
    public func send(_ transcript: Transcript, target: String? = nil, body: String? = nil) async throws -> Response {
        try await send(transcript.method, target ?? transcript.target, headers: transcript.requestHeaders, body: body ?? transcript.requestBody)
    }

    /// An open watch: the response head, and the body to read lines from.
    public struct Stream: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        let body: HTTPClientResponse.Body

        /// Reads lines until the server ends the body or `limit` passes; `ended` tells which.
        public func lines(for limit: Duration, stopAfter count: Int = .max) async -> (lines: [String], ended: Bool) {
            let collected = LineCollector()
            let ended: Bool = await withTaskGroup(of: Bool?.self) { group in
                group.addTask {
                    do {
                        for try await chunk in body {
                            let done: Bool = collected.state.withLock { state in
                                state.partial += Array(buffer: chunk)
                                while let newline = state.partial.firstIndex(of: 0x0A) {
                                    state.lines.append(String(decoding: state.partial[..<newline], as: UTF8.self))
                                    state.partial.removeSubrange(...newline)
                                }
                                return state.lines.count >= count
                            }
                            if done { return false }
                        }
                        return true
                    } catch {
                        return nil
                    }
                }
                group.addTask {
                    try? await Task.sleep(for: limit)
                    return false
                }
                let first = await group.next() ?? false
                group.cancelAll()
                return first ?? true
            }
            return (collected.state.withLock { $0.lines }, ended)
        }
    }

    final class LineCollector: Sendable {
        let state = Mutex<(lines: [String], partial: [UInt8])>(([], []))
    }

    public func openStream(_ method: String = "GET", _ target: String, headers: [(String, String)] = []) async throws -> Stream {
        let response = try await http.execute(request(method, target, headers: headers), timeout: .seconds(600))
        return Stream(status: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) }, body: response.body)
    }
}
