import AsyncHTTPClient
@testable import KubeAPI
import NIOHTTP2
import Testing

/// Every transport and HTTP/2 failure reaches the user as a sentence that names the server and
/// says what happens next, never as a NIO type description.
@Suite("Transport errors are sentences")
struct TransportErrorTests {
    static let client: KubeClient = {
        try! KubeClient(configuration: KubeClientConfiguration(server: "https://cluster.example:6443", origin: "a test"))
    }()

    static func sentence(_ error: Error) throws -> KubeAPIError {
        try #require(client.mapTransportError(error, request: "GET https://cluster.example:6443/api") as? KubeAPIError)
    }

    @Test("a stream reset, by its error code", arguments: [
        (HTTP2ErrorCode.cancel, "cancelled the request's HTTP/2 stream (CANCEL)"),
        (.protocolError, "PROTOCOL_ERROR, as kube-apiserver does to a stream past its limit of concurrent streams"),
        (.refusedStream, "refused the request's HTTP/2 stream before working on it (REFUSED_STREAM, as after a GOAWAY)"),
        (.enhanceYourCalm, "ENHANCE_YOUR_CALM"),
        (.internalError, "reset the request's HTTP/2 stream (error code 2)"),
    ])
    func streamReset(code: HTTP2ErrorCode, expected: String) throws {
        let error = try Self.sentence(NIOHTTP2Errors.streamClosed(streamID: HTTP2StreamID(3), errorCode: code))
        #expect(error.code == .transport)
        #expect(error.message.contains(expected), "\(error.message)")
        #expect(error.message.contains("https://cluster.example:6443"))
        #expect(error.message.contains("tried again"))
        #expect(!error.message.contains("HTTP2ErrorCode") && !error.message.contains("StreamClosed"), "\(error.message)")
    }

    @Test("a stream past the server's limit, a connection closed under a request (as after a GOAWAY), and no connection free in time")
    func connectionFailures() throws {
        let violation = try Self.sentence(NIOHTTP2Errors.maxStreamsViolation())
        #expect(violation.message.contains("more HTTP/2 streams were opened to https://cluster.example:6443 than it allows"))
        let closed = try Self.sentence(HTTPClientError.remoteConnectionClosed)
        #expect(closed.message == "the connection to https://cluster.example:6443 closed unexpectedly; it is tried again on a new one")
        let pool = try Self.sentence(HTTPClientError.getConnectionFromPoolTimeout)
        #expect(pool.code == .timeout)
        #expect(pool.message.contains("no connection to https://cluster.example:6443 became free within 10 s"), "\(pool.message)")
        for error in [violation, closed, pool] { #expect(!error.message.contains("HTTPClientError")) }
    }
}

@Suite("Durations in messages")
struct SpokenDurationTests {
    @Test("rounded as a person says them, never every digit of a jittered backoff", arguments: [
        (Duration.seconds(0.5575181155693312), "558 ms"), (.milliseconds(50), "50 ms"), (.seconds(1), "1 s"),
        (.seconds(2.5575), "2.6 s"), (.seconds(60), "60 s"), (.seconds(150), "2.5 min"), (.seconds(3600), "60 min"),
    ])
    func spoken(duration: Duration, expected: String) {
        #expect(duration.spoken == expected)
    }
}
