import Foundation
import KubeAPI
import KubeTestServer
import Testing
import TestSupport

/// The test server's HTTP/2 held to what kube-apiserver v1.36.2 was recorded doing
/// (Fixtures/http2): its SETTINGS, and a stream past the concurrent-stream limit reset with
/// PROTOCOL_ERROR while the connection stays up.
@Suite("Test API server speaks HTTP/2 as kube-apiserver does")
struct HTTP2Tests {
    struct StreamsReport: Decodable {
        var answers: [String: Int]
        var settings: [String: Int]
        var closed: [String]
        var after_cancel: String?
    }

    /// Runs the raw HTTP/2 client of the fixtures: `count` watches on one connection.
    func openStreams(_ count: Int, on server: KubeTestServer) async throws -> StreamsReport {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let ca = directory.appendingPathComponent("ca.crt")
        try server.pki!.caCertificatePEM.write(to: ca, atomically: true, encoding: .utf8)
        let script = Transcript.directory.deletingLastPathComponent().path
        let result = try await ProcessRunner.runBinary(
            "/usr/bin/env", ["python3", script + "/http2/streams.py", String(server.port), ca.path, server.adminToken, String(count)], timeout: 120)
        #expect(result.status == 0, "\(String(decoding: result.stderr, as: UTF8.self))")
        return try JSONDecoder().decode(StreamsReport.self, from: Data(result.stdout))
    }

    /// Fixtures/http2/settings.txt and watch-110-streams-one-connection.txt; any other limit the
    /// same way.
    @Test("the recorded SETTINGS; streams past the limit reset with PROTOCOL_ERROR, the connection kept",
          arguments: [(limit: 100, opened: 110), (limit: 7, opened: 9)])
    func streamLimit(limit: Int, opened: Int) async throws {
        var options = KubeTestServer.Options()
        options.http2 = true
        options.maxConcurrentStreams = limit
        let server = try await KubeTestServer.start(options)
        let report = try await openStreams(opened, on: server)
        #expect(report.settings == ["1": 4096, "3": limit, "4": 262_144, "5": 262_144, "6": 1_048_896, "9": 1])
        #expect(report.answers == ["200": limit, "reset 1": opened - limit])
        #expect(report.closed.isEmpty)
        #expect(report.after_cancel == "200")
        try await server.stop()
    }

    @Test("HTTP/1.1 only when HTTP/2 is switched off")
    func http1Switch() async throws {
        var options = KubeTestServer.Options()
        options.http2 = false
        let server = try await KubeTestServer.start(options)
        let client = try RawAPIClient(server: server, http2: true)
        let response = try await client.send("GET", "/version")
        #expect(response.status == 200)
        #expect(response.header("Content-Length") != nil)
        #expect(try await server.connections().map(\.applicationProtocol) == ["http/1.1"])
        try await client.shutdown()
        try await server.stop()
    }
}
