import AsyncHTTPClient
import Foundation
import KubeTestServer
import NIOCore
import Testing
import TestSupport

@Suite("Operations endpoints of kubebridge run")
struct OperationsTests {
    /// A Prometheus text exposition, by series (`name{labels}`).
    struct Scrape {
        var series: [String: Double] = [:]

        init(_ text: String) {
            for line in text.split(separator: "\n") where !line.hasPrefix("#") {
                guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
                series[String(line[..<space])] = value
            }
        }

        subscript(_ name: String) -> Double? { series[name] }

        /// The sum of every series of `name` whose labels include `labels`.
        func sum(_ name: String, _ labels: String...) -> Double {
            series.filter { key, _ in
                (key == name || key.hasPrefix(name + "{")) && labels.allSatisfy { key.contains($0) }
            }.values.reduce(0, +)
        }
    }

    static func get(_ url: String) async throws -> (status: Int, body: String) {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 16 << 20)
        return (Int(response.status.code), String(buffer: body))
    }

    @Test("done-when: /metrics during a run, with a forbidden resource, a compaction, and a webhook that fails for a while: every metric moves as it should")
    func metricsMove() async throws {
        let server = try await RunCommandTests.server()
        _ = try await server.inject(FaultRule(verbs: [.list, .watch], resource: "secrets", action: .forbidden))
        let receiver = try await WebhookReceiver.start()
        try await receiver.script([.status(422, body: "no such schema"), .status(503, seconds: 1.5)])
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let bridge = try BridgeProcess(server: server, directory: directory, extraSinks: """
              - type: webhook
                name: hook
                url: \(receiver.url)
                retryWindow: 100ms
                retry: {initial: 100ms, maximum: 300ms}
                batch: {linger: 1ms}
            """)
        try bridge.start()
        let address = try await bridge.operationsAddress()
        let base = "http://\(address)"
        try await waitUntil(timeout: .seconds(60), interval: .milliseconds(200)) { try await Self.get(base + "/readyz").status == 200 }
        #expect(try await Self.get(base + "/healthz") == (200, "ok\n"))
        let before = Scrape(try await Self.get(base + "/metrics").body)
        #expect(before.sum("kubebridge_changes_received_total", "resource=\"core/v1/configmaps\"") == 0)

        for index in 0..<20 {
            let (status, _) = try await server.perform("POST", "/api/v1/namespaces/default/configmaps",
                                                       body: #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm-\#(index)"}}"#)
            #expect(status == 201)
        }
        try await bridge.waitForEvents(20)
        // A compaction, then every watch ends: each comes back from a version that is gone, gets 410, and lists again.
        try await server.compact()
        try await server.endAllWatches()
        for index in 0..<5 {
            _ = try await server.perform("PATCH", "/api/v1/namespaces/default/configmaps/cm-\(index)", body: #"{"data":{"v":"2"}}"#,
                                         contentType: "application/merge-patch+json")
        }
        var after = Scrape("")
        try await waitUntil(timeout: .seconds(120), interval: .milliseconds(300)) {
            after = Scrape(try await Self.get(base + "/metrics").body)
            return after.sum("kubebridge_sink_delivered_total", "sink=\"hook\"") >= 24 && after.sum("kubebridge_relists_total") > 0
                && after.sum("kubebridge_sink_delivered_total", "sink=\"out\"") >= 25
        }
        #expect(after.sum("kubebridge_changes_received_total", "resource=\"core/v1/configmaps\"", "type=\"added\"") >= 20)
        #expect(after.sum("kubebridge_changes_received_total", "resource=\"core/v1/configmaps\"", "type=\"modified\"") >= 5)
        #expect(after.sum("kubebridge_sink_dead_lettered_total", "sink=\"hook\"") == 1)
        #expect(after.sum("kubebridge_sink_failed_total", "sink=\"hook\"") > 0)
        #expect(after.sum("kubebridge_sink_retried_total", "sink=\"hook\"") > 0)
        #expect(after.sum("kubebridge_sink_failed_total", "sink=\"out\"") == 0)
        #expect(after.sum("kubebridge_watch_restarts_total", "reason=\"gone\"") > 0)
        #expect(after.sum("kubebridge_watch_restarts_total", "reason=\"timeout\"") > 0)
        #expect(after["kubebridge_forbidden_resources"] == 1)
        #expect((after["kubebridge_watched_resources"] ?? 0) >= 3)
        #expect(after["kubebridge_leader"] == 1)
        #expect(after["kubebridge_pipeline_buffer_capacity_events{sink=\"out\"}"] == 4096)
        #expect(after["kubebridge_pipeline_buffered_events{sink=\"out\"}"] == 0)
        #expect(after.sum("kubebridge_delivery_latency_seconds_count", "sink=\"out\"") >= 25)
        #expect(after.sum("kubebridge_checkpoint_saves_total") > before.sum("kubebridge_checkpoint_saves_total"))
        let age = try #require(after["kubebridge_checkpoint_age_seconds{resource=\"core/v1/configmaps\"}"])
        #expect(age >= 0 && age < 30)

        let status = try await Self.get(base + "/status")
        let document = try #require(try JSONSerialization.jsonObject(with: Data(status.body.utf8)) as? [String: Any])
        let watches = document["watches"] as? [[String: Any]] ?? []
        let configmaps = try #require(watches.first { $0["resource"] as? String == "core/v1/configmaps" })
        #expect(configmaps["state"] as? String == "watching")
        #expect(configmaps["checkpoint"] != nil)
        #expect(watches.first { $0["resource"] as? String == "core/v1/secrets" }?["state"] as? String == "forbidden")
        let cli = try await KubeBridgeBinary.run(["status", "--address", address])
        #expect(cli.status == 0, "\(cli.stderr)")
        #expect(cli.stdout.contains("core/v1/configmaps") && cli.stdout.contains("forbidden") && cli.stdout.contains("hook"), "\(cli.stdout)")

        #expect(await bridge.stop() == 0)
        try await server.stop()
        await receiver.stop()
    }
}

extension OperationsTests {
    static func waitUntilReady(_ base: String, _ bridge: BridgeProcess) async throws {
        do {
            try await waitUntil(timeout: .seconds(60), interval: .milliseconds(200)) { try await Self.get(base + "/readyz").status == 200 }
        } catch {
            Issue.record("not ready: \((try? await Self.get(base + "/readyz").body) ?? ""); the log:\n\(bridge.logText.suffix(3000))")
            throw error
        }
    }

    @Test("readiness tells the truth: a watch that keeps failing makes /readyz fail naming it and /status show its last error, until it recovers; /status counts the connections")
    func failingWatchIsNotReady() async throws {
        let server = try await RunCommandTests.server()
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let bridge = try BridgeProcess(server: server, directory: directory)
        try bridge.start()
        let address = try await bridge.operationsAddress()
        let base = "http://\(address)"
        try await Self.waitUntilReady(base, bridge)

        let fault = try await server.inject(FaultRule(verbs: [.list, .watch], resource: "configmaps",
                                                      action: .status(code: 500, reason: "InternalError", message: "etcd is unhappy")))
        try await server.endAllWatches()
        var readiness = (status: 0, body: "")
        do {
            try await waitUntil(timeout: .seconds(60), interval: .milliseconds(200)) {
                readiness = try await Self.get(base + "/readyz")
                return readiness.status == 503
            }
        } catch {
            Issue.record("still ready; /status: \((try? await Self.get(base + "/status").body) ?? ""); the log:\n\(bridge.logText.suffix(3000))")
            throw error
        }
        #expect(readiness.body.contains("watches failing: core/v1/configmaps ("), "\(readiness.body)")
        #expect(readiness.body.contains("etcd is unhappy"), "\(readiness.body)")
        let status = try #require(try JSONSerialization.jsonObject(with: Data(try await Self.get(base + "/status").body.utf8)) as? [String: Any])
        #expect(status["ready"] as? Bool == false)
        let configmaps = try #require((status["watches"] as? [[String: Any]])?.first { $0["resource"] as? String == "core/v1/configmaps" })
        #expect((configmaps["state"] as? String)?.hasPrefix("retrying") == true, "\(configmaps)")
        #expect((configmaps["lastError"] as? String)?.contains("etcd is unhappy") == true, "\(configmaps)")
        #expect((status["notReady"] as? [String])?.contains { $0.contains("core/v1/configmaps") } == true, "\(status)")
        let cli = try await KubeBridgeBinary.run(["status", "--address", address])
        #expect(cli.stdout.contains("ready: no") && cli.stdout.contains("not ready: 1 watches failing: core/v1/configmaps"), "\(cli.stdout)")
        #expect(cli.stdout.contains("etcd is unhappy") && cli.stdout.contains("connections to the API server: "), "\(cli.stdout)")
        let connections = try #require(status["connections"] as? [String: Int])
        #expect((connections["watches"] ?? 0) >= 1, "\(connections)")
        #expect((connections["requestsHTTP2"] ?? 0) + (connections["requestsHTTP1"] ?? 0) >= 1, "\(connections)")

        try await server.removeFault(fault)
        try await Self.waitUntilReady(base, bridge)
        #expect(await bridge.stop() == 0)
        try await server.stop()
    }
}
