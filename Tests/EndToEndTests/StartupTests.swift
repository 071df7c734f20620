import Foundation
import KubeTestServer
import Testing
import TestSupport

@Suite("kubebridge run at start: what waiting cannot fix ends it, an API server away is waited for")
struct StartupTests {
    @Test("credentials the server refuses, or a server certificate another CA signed: exit code 2 and one sentence", arguments: ["token", "ca"])
    func refusedAtStart(problem: String) async throws {
        let server = try await RunCommandTests.server()
        let other = try await RunCommandTests.server()
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let bridge: BridgeProcess
        let expected: String
        if problem == "token" {
            bridge = try BridgeProcess(server: server, directory: directory, user: .token("not-a-token"))
            expected = "401 Unauthorized: the credentials were refused"
        } else {
            // The other server's certificate, checked against this server's CA.
            bridge = try BridgeProcess(server: server, directory: directory)
            let kubeconfig = directory.appendingPathComponent("kubeconfig")
            let text = try String(contentsOf: kubeconfig, encoding: .utf8).replacingOccurrences(of: server.url, with: other.url)
            try text.write(to: kubeconfig, atomically: true, encoding: .utf8)
            expected = "did not verify"
        }
        try bridge.start()
        let status = await bridge.exitStatus(within: .seconds(60))
        let log = bridge.logText
        #expect(status == 2, "\(log.suffix(2000))")
        #expect(log.contains("kubebridge: error: ") && log.contains(expected), "\(log.suffix(2000))")
        if status == nil { _ = await bridge.stop() }
        try await server.stop()
        try await other.stop()
    }

    @Test("an API server that cannot be reached: said once, waited for with backoff, alive and not ready on the operations endpoints meanwhile, and the process goes on until stopped")
    func unreachableAtStart() async throws {
        let server = try await RunCommandTests.server()
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let bridge = try BridgeProcess(server: server, directory: directory)
        try await server.stop()
        try bridge.start()
        try await waitUntil { bridge.logText.contains("waiting for the API server: ") }
        // A liveness probe must not restart a replica that waits; readiness says why it waits.
        let address = try await bridge.operationsAddress()
        #expect(try await OperationsTests.get("http://\(address)/healthz").status == 200)
        let ready = try await OperationsTests.get("http://\(address)/readyz")
        #expect(ready.status == 503 && ready.body.hasPrefix("waiting for the API server: cannot connect to"), "\(ready)")
        let status = try await OperationsTests.get("http://\(address)/status").body
        #expect(status.contains(#""phase":"starting""#) && status.contains(#""ready":false"#), "\(status)")
        #expect(try await OperationsTests.get("http://\(address)/metrics").status == 200)
        // Still waiting, and said so once (the rounds of backoff are FirstContactTests', on a manual clock).
        #expect(await bridge.exitStatus(within: .zero) == nil)
        let log = bridge.logText
        #expect(log.components(separatedBy: "waiting for the API server").count == 2, "\(log)")
        #expect(log.contains("cannot connect to") && log.contains("connection refused"), "\(log)")
        #expect(!log.contains("kubebridge: error"), "\(log)")
        _ = await bridge.stop()
    }
}
