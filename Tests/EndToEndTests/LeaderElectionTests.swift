import Foundation
import KubeTestServer
import Testing
import TestSupport

@Suite("Two replicas with leader election and checkpoints in ConfigMaps")
struct LeaderElectionTests {
    static let state = "  store: kubernetes\n  namespace: kubebridge\n  name: bridge-checkpoint"
    static let election = "leaderElection: {namespace: kubebridge, name: bridge, leaseDuration: 2s, renewDeadline: 1500ms, retryPeriod: 300ms}"

    static func lease(_ server: KubeTestServer) async throws -> [String: Any] {
        let (_, body) = try await server.perform("GET", "/apis/coordination.k8s.io/v1/namespaces/kubebridge/leases/bridge")
        let object = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        return object?["spec"] as? [String: Any] ?? [:]
    }

    static func logged(_ bridge: BridgeProcess, _ text: String) -> Bool {
        ((try? String(contentsOf: bridge.log, encoding: .utf8)) ?? "").contains(text)
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
        try await waitUntil(timeout: .seconds(20), interval: .milliseconds(100)) { Self.logged(leader, "leading: holding the lease kubebridge/bridge") }
        try follower.start()
        try await waitUntil(timeout: .seconds(20), interval: .milliseconds(100)) { Self.logged(follower, "standing by: the lease kubebridge/bridge is held by") }
        let standby = try await follower.operationsAddress()
        #expect(try await OperationsTests.get("http://\(standby)/readyz").status == 200)
        #expect(OperationsTests.Scrape(try await OperationsTests.get("http://\(standby)/metrics").body)["kubebridge_leader"] == 0)
        try await Task.sleep(for: .seconds(2))
        #expect(receiver.events().count > 0, "the leader delivered nothing before it was killed")
        await leader.kill()
        let killed = ContinuousClock.now
        try await waitUntil(timeout: .seconds(20), interval: .milliseconds(100)) { Self.logged(follower, "leading: holding the lease kubebridge/bridge") }
        let takeover = killed.duration(to: .now)
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
            Issue.record("the final change never arrived; the follower's log:\n\(((try? String(contentsOf: follower.log, encoding: .utf8)) ?? "").suffix(4000))")
            throw error
        }
        #expect(await follower.stop() == 0)
        let events = delivered()
        #expect(!receiver.events().contains { $0["namespace"] as? String == "kubebridge" }, "kubebridge bridged its own checkpoint ConfigMaps")
        let audit = DeliveryAudit(delivered: events, history: history)
        #expect(audit.missing.isEmpty, "missing at the receiver: \(audit.missing.prefix(20))")
        #expect(audit.disorder.isEmpty, "out of order: \(audit.disorder.prefix(20))")
        #expect(audit.conflicting.isEmpty)
        let lease = try await Self.lease(server)
        #expect(lease["holderIdentity"] as? String == "", "the follower released the lease when it stopped: \(lease)")
        #expect(lease["leaseTransitions"] as? Int == 1)
        #expect(takeover < .seconds(8), "took \(takeover)")
        print("leader election test: \(history.count) changes, \(events.count) events received, \(audit.duplicates) duplicates, takeover after \(takeover)")
        try await server.stop()
        await receiver.stop()
    }
}
