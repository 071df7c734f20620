import Foundation
import KubeTestServer
import Testing
import TestSupport

@Suite("Two replicas with leader election and checkpoints in ConfigMaps")
struct LeaderElectionTests {
    static let state = "  store: kubernetes\n  namespace: kubebridge\n  name: bridge-checkpoint"
    static let election = "leaderElection: {namespace: kubebridge, name: bridge, leaseDuration: 4s, renewDeadline: 3s, retryPeriod: 300ms}"

    static func lease(_ server: KubeTestServer) async throws -> [String: Any] {
        let (_, body) = try await server.perform("GET", "/apis/coordination.k8s.io/v1/namespaces/kubebridge/leases/bridge")
        let object = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        return object?["spec"] as? [String: Any] ?? [:]
    }

    static func logged(_ bridge: BridgeProcess, _ text: String) -> Bool {
        bridge.logText.contains(text)
    }

    @Test("done-when: the leader is SIGKILLed mid-churn, the follower takes the lease and carries on from the shared checkpoint: the webhook receives every change, in order per object")
    func takeover() async throws {
        let server = try await RunCommandTests.server(history: true)
        let (created, _) = try await server.perform("POST", "/api/v1/namespaces", body: #"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"kubebridge"}}"#)
        #expect(created == 201)
        let receiver = try await WebhookReceiver.start()
        let sink = """
              - type: webhook
                name: hook
                url: \(receiver.url)
                retry: {initial: 100ms, maximum: 1s}
                batch: {linger: 1ms}
            """
        let (first, second) = (try temporaryDirectory(), try temporaryDirectory())
        defer {
            try? FileManager.default.removeItem(at: first)
            try? FileManager.default.removeItem(at: second)
        }
        let leader = try BridgeProcess(server: server, directory: first, extraSinks: sink, state: Self.state, extraConfig: Self.election)
        let follower = try BridgeProcess(server: server, directory: second, extraSinks: sink, state: Self.state, extraConfig: Self.election)
        var churnOptions = Churn.Options()
        churnOptions.rate = 60
        churnOptions.customResources = [.widgets(installAfter: .seconds(1))]
        churnOptions.objectsPerKind = 4
        let churn = Task { try await Churn(server: server, options: churnOptions).run() }

        try leader.start()
        try await waitUntil(timeout: .seconds(60), interval: .milliseconds(100)) { Self.logged(leader, "leading: holding the lease kubebridge/bridge") }
        try follower.start()
        try await waitUntil(timeout: .seconds(60), interval: .milliseconds(100)) { Self.logged(follower, "standing by: the lease kubebridge/bridge is held by") }
        let standby = try await follower.operationsAddress()
        #expect(try await OperationsTests.get("http://\(standby)/readyz").status == 200)
        #expect(OperationsTests.Scrape(try await OperationsTests.get("http://\(standby)/metrics").body)["kubebridge_leader"] == 0)
        try await Task.sleep(for: .seconds(2))
        #expect(receiver.events().count > 0, "the leader delivered nothing before it was killed")
        // A probe of the standby's endpoints through the takeover never finds them closed, and they stay where they were.
        let probes = Task { () -> [String] in
            var failures: [String] = []
            while !Task.isCancelled {
                do {
                    let health = try await OperationsTests.get("http://\(standby)/healthz")
                    if health.status != 200 { failures.append("\(health.status) \(health.body)") }
                } catch where !Task.isCancelled {
                    failures.append("\(error)")
                } catch {}
                try? await Task.sleep(for: .milliseconds(20))
            }
            return failures
        }
        await leader.kill()
        let killed = ContinuousClock.now
        try await waitUntil(timeout: .seconds(60), interval: .milliseconds(100)) { Self.logged(follower, "leading: holding the lease kubebridge/bridge") }
        let takeover = killed.duration(to: .now)
        try await waitUntil { (try? await OperationsTests.get("http://\(standby)/status").body.contains(#""phase":"bridging""#)) == true }
        probes.cancel()
        let failedProbes = await probes.value
        #expect(failedProbes.isEmpty, "the endpoints failed a probe during the takeover: \(failedProbes.prefix(5))")
        try await Task.sleep(for: .seconds(2))
        churn.cancel()
        _ = try? await churn.value

        // The checkpoint's own ConfigMaps are in the kubebridge namespace, and kubebridge leaves them out.
        let history = try await server.history().filter { CrashRun.resources.contains($0.storage) && $0.namespace != "kubebridge" }
        let finalVersion = history.map(\.resourceVersion).max() ?? 0
        func delivered() -> [DeliveryAudit.Delivered] { receiver.events().compactMap { DeliveryAudit.Delivered($0) } }
        do {
            try await waitUntil(timeout: .seconds(60), interval: .milliseconds(500)) { delivered().contains { $0.resourceVersion == finalVersion } }
        } catch {
            Issue.record("the final change never arrived; the follower's log:\n\(follower.logText.suffix(4000))")
            throw error
        }
        let followerExit = await follower.stop()
        #expect(followerExit == 0, "the follower's log:\n\(follower.logText.suffix(3000))")
        let events = delivered()
        #expect(!receiver.events().contains { $0["namespace"] as? String == "kubebridge" }, "kubebridge bridged its own checkpoint ConfigMaps")
        let audit = DeliveryAudit(delivered: events, history: history)
        #expect(audit.missing.isEmpty, "missing at the receiver: \(audit.missing.prefix(20))")
        #expect(audit.disorder.isEmpty, "out of order: \(audit.disorder.prefix(20))")
        #expect(audit.conflicting.isEmpty)
        let lease = try await Self.lease(server)
        #expect(lease["holderIdentity"] as? String == "", "the follower released the lease when it stopped: \(lease)")
        #expect(lease["leaseTransitions"] as? Int == 1)
        print("leader election test: \(history.count) changes, \(events.count) events received, \(audit.duplicates) duplicates, takeover after \(takeover)")
        try await server.stop()
        await receiver.stop()
    }
}

extension LeaderElectionTests {
    @Test("done-when: 250 watched resources over HTTP/2, checkpoints in ConfigMaps and leader election: every resource is watched and delivers, and the checkpoints and the Lease never wait behind the watches")
    func twoHundredFiftyResources() async throws {
        let server = try await RunCommandTests.server()
        _ = try await server.perform("POST", "/api/v1/namespaces", body: #"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"kubebridge"}}"#)
        let crds = 200
        for index in 0..<crds {
            let (status, body) = try await server.perform("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body: """
                {"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"things.many\(index).example.com"},\
                "spec":{"group":"many\(index).example.com","names":{"plural":"things","singular":"thing","kind":"Thing"},\
                "scope":"Namespaced","versions":[{"name":"v1","served":true,"storage":true,"schema":{"openAPIV3Schema":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}}]}}
                """)
            #expect(status == 201, "\(body)")
        }
        func createThing(_ index: Int, _ name: String) async throws -> Int {
            try await server.perform("POST", "/apis/many\(index).example.com/v1/namespaces/default/things",
                                     body: #"{"apiVersion":"many\#(index).example.com/v1","kind":"Thing","metadata":{"name":"\#(name)"}}"#).status
        }
        try await waitUntil { try await createThing(crds - 1, "before") == 201 }
        for index in 0..<(crds - 1) { #expect(try await createThing(index, "before") == 201) }

        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let bridge = try BridgeProcess(server: server, directory: directory, include: ["*/*/*"], state: Self.state, extraConfig: Self.election)
        try bridge.start()
        try await waitUntil(timeout: .seconds(120), interval: .milliseconds(200)) { Self.logged(bridge, "(/metrics /healthz /readyz /status)") }
        let address = try await bridge.operationsAddress()
        do {
            try await waitUntil(timeout: .seconds(120), interval: .milliseconds(300)) {
                try await OperationsTests.get("http://\(address)/readyz").status == 200
            }
        } catch {
            Issue.record("not ready: \((try? await OperationsTests.get("http://\(address)/readyz").body) ?? ""); the log:\n\(bridge.logText.suffix(3000))")
            throw error
        }
        for index in 0..<crds { #expect(try await createThing(index, "after") == 201) }
        // Each CRD's group is in the event type: one type per resource for the objects made before
        // the start and one per resource for those made after.
        func types(_ name: String) -> Set<String> {
            Set(bridge.events().filter { $0["name"] as? String == name && ($0["type"] as? String)?.contains(".example.com.") == true }
                .compactMap { $0["type"] as? String })
        }
        try await waitUntil(timeout: .seconds(120), interval: .milliseconds(300)) { types("after").count >= crds }
        #expect(types("before").count == crds)
        let status = try #require(try JSONSerialization.jsonObject(with: Data(try await OperationsTests.get("http://\(address)/status").body.utf8)) as? [String: Any])
        let watches = status["watches"] as? [[String: Any]] ?? []
        #expect(watches.count >= 250, "\(watches.count) watches")
        #expect(watches.allSatisfy { $0["state"] as? String == "watching" }, "\(watches.filter { $0["state"] as? String != "watching" }.prefix(5))")
        let connections = try #require(status["connections"] as? [String: Int])
        #expect(connections["watches"] ?? 0 >= 250, "\(connections)")
        // One HTTP/2 connection carries every other request, where the server offers HTTP/2.
        if KubeTestServer.Options().http2 {
            #expect(connections["requestsHTTP2"] == 1, "\(connections)")
        } else {
            #expect((connections["requestsHTTP1"] ?? 0) >= 1, "\(connections)")
        }
        // The checkpoints reached the ConfigMap while every watch was open.
        let (listed, body) = try await server.perform("GET", "/api/v1/namespaces/kubebridge/configmaps")
        #expect(listed == 200)
        #expect(body.contains("bridge-checkpoint"), "\(body.prefix(500))")
        let exit = await bridge.stop()
        let log = bridge.logText
        #expect(exit == 0, "\(log.suffix(3000))")
        #expect(!log.contains("saving the last checkpoint failed"), "\(log.suffix(3000))")
        try await server.stop()
    }
}
