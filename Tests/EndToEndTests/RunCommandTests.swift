import Foundation
import KubeAPI
import KubeModel
import NIOCore
import KubeTestServer
import Synchronization
import Testing
import TestSupport

/// `kubebridge run` as a process, against the test API server: a file sink, and any `extraSinks`.
final class BridgeProcess: @unchecked Sendable {
    let configPath: String
    let outputPath: String
    let directory: URL
    private var process: Process?
    let log: URL
    /// Where the log of the latest start begins.
    private var logOffset: UInt64 = 0

    /// Writes a configuration for `server` into `directory`.
    init(server: KubeTestServer, directory: URL, include: [String] = ["core/v1/configmaps", "core/v1/secrets", "apps/v1/deployments", "example.com/*/*"],
         extraSinks: String = "", user: KubeTestServer.KubeconfigUser = .admin, state: String = "", extraConfig: String = "") throws {
        self.directory = directory
        let kubeconfig = directory.appendingPathComponent("kubeconfig").path
        try server.writeKubeconfig(to: kubeconfig, user: user)
        outputPath = directory.appendingPathComponent("out/events.jsonl").path
        configPath = directory.appendingPathComponent("bridge.yaml").path
        log = directory.appendingPathComponent("bridge.log")
        try """
            cluster:
              name: test
              kubeconfig: \(kubeconfig)
            state:
              directory: \(directory.appendingPathComponent("state").path)
            \(state)
            \(extraConfig)
            resources:
              include: [\(include.map { "\"\($0)\"" }.joined(separator: ", "))]
            checkpoint:
              interval: 200ms
            logging:
              level: info
            operations:
              address: 127.0.0.1:0
            sinks:
              - type: file
                name: out
                path: \(outputPath)
                batch: {linger: 1ms}
            \(extraSinks)
            """.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: KubeBridgeBinary.path)
        process.arguments = ["run", "--config", configPath]
        var environment = ProcessInfo.processInfo.environment
        environment["KUBECONFIG"] = nil
        process.environment = environment
        if !FileManager.default.fileExists(atPath: log.path) { _ = FileManager.default.createFile(atPath: log.path, contents: nil) }
        let handle = try FileHandle(forWritingTo: log)
        logOffset = handle.seekToEndOfFile()
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        self.process = process
    }

    /// SIGTERM, and waits for the exit; returns the status.
    func stop() async -> Int32 {
        guard let process else { return -1 }
        process.terminate()
        return await waitForExit(process)
    }

    /// Everything the process has written so far, across its starts.
    var logText: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    /// Waits for the process to end on its own; nil when it is still running after `timeout`.
    func exitStatus(within timeout: Duration) async -> Int32? {
        guard let process else { return nil }
        try? await waitUntil(timeout: timeout, interval: .milliseconds(50)) { !process.isRunning }
        return process.isRunning ? nil : await waitForExit(process)
    }

    /// SIGKILL: no chance to flush anything.
    func kill() async {
        guard let process else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        _ = await waitForExit(process)
    }

    private func waitForExit(_ process: Process) async -> Int32 {
        while process.isRunning { try? await Task.sleep(for: .milliseconds(20)) }
        self.process = nil
        return process.terminationStatus
    }

    /// Waits until the latest start is watching: from then on SIGTERM is a graceful stop (before,
    /// the signal handlers are not installed yet, and it ends the process at once).
    func waitUntilWatching() async throws {
        try await waitUntil(timeout: .seconds(60), interval: .milliseconds(50)) {
            let text = (try? String(contentsOf: self.log, encoding: .utf8)) ?? ""
            return text.utf8.dropFirst(Int(self.logOffset)).split(separator: UInt8(ascii: "\n")).contains { String(decoding: $0, as: UTF8.self).contains("msg=\"watching ") }
        }
    }

    /// The operations endpoint's `host:port`, once the log names it.
    func operationsAddress() async throws -> String {
        var address: String?
        try await waitUntil(timeout: .seconds(60)) {
            let text = (try? String(contentsOf: self.log, encoding: .utf8)) ?? ""
            guard let range = text.range(of: "operations endpoints on http://") else { return false }
            address = String(text[range.upperBound...].prefix { $0 != " " })
            return true
        }
        return address!
    }

    /// The events written so far, parsed.
    func events() -> [[String: Any]] {
        guard let text = try? String(contentsOfFile: outputPath, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// `changetype name` of each event.
    func described(from start: Int = 0) -> [String] {
        events().dropFirst(start).map { "\($0["changetype"] as? String ?? "?") \($0["name"] as? String ?? "?")" }
    }

    func waitForEvents(_ count: Int, timeout: Duration = .seconds(20)) async throws {
        try await waitUntil(timeout: timeout) { self.events().count >= count }
    }
}

@Suite("kubebridge run, as a process")
struct RunCommandTests {
    static func server(history: Bool = false) async throws -> KubeTestServer {
        // HTTPS, so that the bridge talks HTTP/2 as it does to kube-apiserver (or HTTP/1.1 under
        // KUBEBRIDGE_TEST_HTTP1_ONLY).
        var options = KubeTestServer.Options()
        options.recordHistory = history
        options.bookmarkInterval = .milliseconds(500)
        return try await KubeTestServer.start(options)
    }

    func create(_ server: KubeTestServer, _ name: String, value: String = "1") async throws {
        let (status, body) = try await server.perform("POST", "/api/v1/namespaces/default/configmaps",
                                                      body: #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"\#(name)"},"data":{"v":"\#(value)"}}"#)
        #expect(status == 201, "\(body)")
    }

    func patch(_ server: KubeTestServer, _ name: String, value: String) async throws {
        let (status, _) = try await server.perform("PATCH", "/api/v1/namespaces/default/configmaps/\(name)", body: #"{"data":{"v":"\#(value)"}}"#,
                                                   contentType: "application/merge-patch+json")
        #expect(status == 200)
    }

    func delete(_ server: KubeTestServer, _ name: String) async throws {
        let (status, _) = try await server.perform("DELETE", "/api/v1/namespaces/default/configmaps/\(name)")
        #expect(status == 200)
    }

    @Test("done-when: a clean restart (SIGTERM, start again) re-sends nothing already acknowledged")
    func cleanRestart() async throws {
        let server = try await Self.server()
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        for name in ["a", "b", "c"] { try await create(server, name) }
        let bridge = try BridgeProcess(server: server, directory: directory, include: ["core/v1/configmaps"])
        try bridge.start()
        try await bridge.waitForEvents(3)
        try await patch(server, "a", value: "2")
        try await bridge.waitForEvents(4)
        #expect(await bridge.stop() == 0)
        #expect(bridge.described() == ["synced a", "synced b", "synced c", "modified a"])

        try bridge.start()
        try await Task.sleep(for: .seconds(1))
        try await patch(server, "b", value: "2")
        try await bridge.waitForEvents(5)
        try await Task.sleep(for: .milliseconds(500))
        #expect(await bridge.stop() == 0)
        #expect(bridge.described(from: 4) == ["modified b"], "nothing sent twice: \(bridge.described())\n\((try? String(contentsOf: bridge.log, encoding: .utf8)) ?? "")")
        try await server.stop()
    }

    @Test("done-when: changes while the bridge is down, then a compaction: the file shows exactly those differences")
    func downtimeAndCompaction() async throws {
        let server = try await Self.server()
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        for name in ["same", "changed", "gone", "recreated"] { try await create(server, name) }
        let bridge = try BridgeProcess(server: server, directory: directory, include: ["core/v1/configmaps"])
        try bridge.start()
        try await bridge.waitForEvents(4)
        try await Task.sleep(for: .milliseconds(500))
        #expect(await bridge.stop() == 0)

        try await patch(server, "changed", value: "2")
        try await delete(server, "gone")
        try await delete(server, "recreated")
        try await create(server, "recreated", value: "new")
        try await create(server, "new")
        try await server.compact()

        try bridge.start()
        try await bridge.waitForEvents(4 + 5)
        try await Task.sleep(for: .milliseconds(500))
        #expect(await bridge.stop() == 0)
        let after = bridge.events().dropFirst(4)
        #expect(after.map { "\($0["changetype"] as? String ?? "") \($0["name"] as? String ?? "")" }.sorted()
                == ["deleted gone", "deleted recreated", "synced changed", "synced new", "synced recreated"])
        #expect(after.filter { $0["changetype"] as? String == "deleted" }.allSatisfy { $0["finalstateunknown"] as? Bool == true })
        try await server.stop()
    }

    @Test("done-when: SIGKILL at random moments, ten times, under churn: every change arrives, in order per object, duplicates with the same id")
    func crashes() async throws {
        let server = try await Self.server(history: true)
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let bridge = try BridgeProcess(server: server, directory: directory)
        // A last run catches up with everything, then stops cleanly.
        let (history, finalVersion) = try await CrashRun.run(server: server, bridge: bridge, kills: 10, alive: 400...1500)
        try await waitUntil(timeout: .seconds(120)) {
            bridge.events().contains { Int64($0["resourceversion"] as? String ?? "") == finalVersion }
        }
        try await Task.sleep(for: .milliseconds(500))
        #expect(await bridge.stop() == 0)

        let events = bridge.events()
        let audit = DeliveryAudit(delivered: events.compactMap(DeliveryAudit.Delivered.init), history: history)
        #expect(audit.missing.isEmpty, "missing: \(audit.missing.prefix(20))")
        #expect(audit.disorder.isEmpty, "out of order: \(audit.disorder.prefix(20))")
        #expect(audit.conflicting.isEmpty, "one id, two contents: \(audit.conflicting.prefix(20))")
        #expect(events.count == events.compactMap(DeliveryAudit.Delivered.init).count, "every line is a complete event")
        print("crash test: \(history.count) changes made, \(events.count) events written, \(audit.duplicates) duplicates, \(audit.missing.count) missing")

        // Every line parses with the official CloudEvents SDK for Python.
        let check = try await ProcessRunner.runBinary("/usr/bin/env", ["python3", "-c", Self.cloudEventsCheck, bridge.outputPath], timeout: 120)
        #expect(check.status == 0, "\(String(decoding: check.stderr, as: UTF8.self))")
        #expect(String(decoding: check.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) == "\(events.count)")
        try await server.stop()
    }

    @Test("changedby names the field manager of each write, changesubresource a status write; writers within one second are all named; a deletion names nobody")
    func changedBy() async throws {
        let server = try await Self.server()
        let now = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
        try await server.setClock { now.withLock { $0 } }
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let bridge = try BridgeProcess(server: server, directory: directory, include: ["core/v1/configmaps", "apps/v1/deployments"])
        func perform(_ method: String, _ path: String, body: String? = nil, contentType: String = "application/json", at second: Double) async throws {
            now.withLock { $0 = Date(timeIntervalSince1970: 1_800_000_000 + second) }
            let (status, answer) = try await server.perform(method, path, body: body, contentType: contentType)
            #expect((200...201).contains(status), "\(method) \(path): \(answer)")
        }
        let configMaps = "/api/v1/namespaces/default/configmaps"
        let deployments = "/apis/apps/v1/namespaces/default/deployments"
        // One object in each resource before the start: once both are sent, both resources are
        // listed, and what follows arrives through their watches.
        try await perform("POST", configMaps, body: #"{"metadata":{"name":"first"}}"#, at: -10)
        try await perform("POST", deployments, body: Self.deployment.replacingOccurrences(of: #""name":"web""#, with: #""name":"first""#), at: -10)
        try bridge.start()
        try await bridge.waitForEvents(2)
        try await perform("POST", configMaps + "?fieldManager=deploy-bot", body: #"{"metadata":{"name":"a"},"data":{"v":"1"}}"#, at: 0)
        try await perform("PATCH", configMaps + "/a?fieldManager=tuner", body: #"{"data":{"v":"2"}}"#, contentType: "application/merge-patch+json", at: 1)
        try await perform("PATCH", configMaps + "/a?fieldManager=deploy-bot", body: #"{"data":{"w":"3"}}"#, contentType: "application/merge-patch+json", at: 1)
        try await perform("POST", deployments + "?fieldManager=kubectl-create", body: Self.deployment, at: 2)
        try await perform("PATCH", deployments + "/web/status?fieldManager=deployment-controller", body: #"{"status":{"replicas":1}}"#,
                          contentType: "application/merge-patch+json", at: 3)
        try await perform("DELETE", configMaps + "/a", at: 4)
        try await bridge.waitForEvents(2 + 6)
        #expect(await bridge.stop() == 0)
        // Each resource is its own watch: order holds per object, not across them.
        func seen(_ name: String) -> [String] {
            bridge.events().filter { $0["name"] as? String == name }.map { event in
                ["changetype", "changedby", "changeoperation", "changesubresource"].map { event[$0] as? String ?? "-" }.joined(separator: " ")
            }
        }
        #expect(seen("first") == ["synced kubebridge-test Update -", "synced kubebridge-test Update -"], "a ConfigMap and a Deployment, by the default manager")
        #expect(seen("a") == ["added deploy-bot Update -", "modified tuner Update -", "modified deploy-bot,tuner Update -", "deleted - - -"])
        #expect(seen("web") == ["added kubectl-create Update -", "modified deployment-controller Update status"])
        let check = try await ProcessRunner.runBinary("/usr/bin/env", ["python3", "-c", Self.cloudEventsCheck, bridge.outputPath], timeout: 120)
        #expect(check.status == 0, "\(String(decoding: check.stderr, as: UTF8.self))")
        try await server.stop()
    }

    @Test("changedpaths: a scale says /spec/replicas, a status write its status; a sink filtered on /spec takes the first only; changes while down and a compaction come as synced events with exactly their paths")
    func changedPaths() async throws {
        let server = try await Self.server()
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let specOnly = directory.appendingPathComponent("out/spec.jsonl").path
        let patched = directory.appendingPathComponent("out/patched.jsonl").path
        let bridge = try BridgeProcess(server: server, directory: directory, include: ["apps/v1/deployments", "core/v1/configmaps"], extraSinks: """
              - type: file
                name: spec
                path: \(specOnly)
                batch: {linger: 1ms}
                filter:
                  changedPaths: {include: [/spec], exclude: [/spec/paused]}
              - type: file
                name: patched
                path: \(patched)
                batch: {linger: 1ms}
                diff: mergePatch
            """)
        let deployments = "/apis/apps/v1/namespaces/default/deployments"
        func perform(_ method: String, _ path: String, _ body: String) async throws {
            let (status, answer) = try await server.perform(method, path, body: body, contentType: method == "PATCH" ? "application/merge-patch+json" : "application/json")
            #expect((200...201).contains(status), "\(method) \(path): \(answer)")
        }
        try await perform("POST", deployments, Self.deployment)
        try await create(server, "settings")
        try bridge.start()
        try await bridge.waitForEvents(2)
        try await perform("PATCH", deployments + "/web", #"{"spec":{"replicas":3}}"#)
        try await perform("PATCH", deployments + "/web/status", #"{"status":{"replicas":3,"readyReplicas":2}}"#)
        try await perform("PATCH", deployments + "/web/status", #"{"status":{"readyReplicas":3}}"#)
        try await perform("PATCH", deployments + "/web", #"{"spec":{"paused":true}}"#)
        try await patch(server, "settings", value: "2")
        try await bridge.waitForEvents(2 + 5)
        #expect(await bridge.stop() == 0)
        func paths(_ events: some Sequence<[String: Any]>) -> [String] {
            events.map { "\($0["changetype"] as? String ?? "?") \($0["name"] as? String ?? "?") \($0["changedpaths"] as? String ?? "-")" }
        }
        // Each resource is its own watch: order holds per object, not across them.
        func of(_ name: String, _ events: [[String: Any]]) -> [String] { paths(events.filter { $0["name"] as? String == name }) }
        #expect(of("web", bridge.events()) == [
            "synced web -", "modified web /spec/replicas", "modified web /status", "modified web /status/readyReplicas", "modified web /spec/paused",
        ], "the first sight of an object has nothing to compare with; a new member is one path, a changed leaf its own")
        #expect(of("settings", bridge.events()) == ["synced settings -", "modified settings /data/v"])
        let spec = (try String(contentsOfFile: specOnly, encoding: .utf8)).split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        #expect(of("web", spec) == ["synced web -", "modified web /spec/replicas"],
                "the sink filtered on /spec takes the scale, and neither the status nor /spec/paused, which it excludes")
        #expect(of("settings", spec) == ["synced settings -"], "nor a ConfigMap's data")

        // While the bridge is down: a change, then a compaction (so the restart relists).
        try await perform("PATCH", deployments + "/web", #"{"spec":{"replicas":5,"template":{"metadata":{"labels":{"app":"web","tier":"front"}}}}}"#)
        try await server.compact()
        try bridge.start()
        try await bridge.waitForEvents(8)
        #expect(await bridge.stop() == 0)
        #expect(paths(bridge.events().dropFirst(7)) == ["synced web /spec/replicas,/spec/template/metadata/labels/tier"],
                "compared with the state sent before the gap")
        // The merge patches: each turns the object sent before into the one sent with it, so a
        // consumer holding the first state can follow with patches alone.
        let withPatches = try (try String(contentsOfFile: patched, encoding: .utf8)).split(separator: "\n").map {
            try JSONValue(parsing: ByteBuffer(string: String($0)))
        }
        for name in ["web", "settings"] {
            let events = withPatches.filter { $0["name"]?.stringValue == name }
            #expect(events.first?["mergepatch"] == nil, "nothing to compare the first with")
            #expect(events.count == (name == "web" ? 6 : 2))
            for (previous, event) in zip(events, events.dropFirst()) {
                let text = try #require(event["mergepatch"]?.stringValue, "\(event.text)")
                let rebuilt = mergePatched(previous["data"] ?? .null, by: try JSONValue(parsing: ByteBuffer(string: text)))
                #expect(rebuilt == event["data"], "\(text)")
            }
        }
        let check = try await ProcessRunner.runBinary("/usr/bin/env", ["python3", "-c", Self.cloudEventsCheck, bridge.outputPath], timeout: 120)
        #expect(check.status == 0, "\(String(decoding: check.stderr, as: UTF8.self))")
        try await server.stop()
    }

    static let deployment = """
        {"metadata":{"name":"web"},"spec":{"replicas":1,"selector":{"matchLabels":{"app":"web"}},
         "template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"web","image":"nginx"}]}}}}
        """

    static let cloudEventsCheck = """
        import json, sys
        from cloudevents.v1.http import from_dict
        count = 0
        for line in open(sys.argv[1]):
            raw = json.loads(line)
            event = from_dict(raw)
            assert event["specversion"] == "1.0", raw
            assert event["id"] == raw["id"] and event["source"] and event["type"].startswith("io.kubebridge."), raw
            assert event["datacontenttype"] == "application/json"
            assert isinstance(event.data, dict) and event.data.get("kind"), raw
            assert "managedFields" not in event.data.get("metadata", {})
            if event.data["kind"] == "Secret":
                assert all(v == "REDACTED" for v in event.data.get("data", {}).values()), raw
            count += 1
        print(count)
        """
}
