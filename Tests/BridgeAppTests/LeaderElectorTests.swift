import BridgeApp
import Foundation
import KubeAPI
import KubeTestServer
import Synchronization
import Testing
import TestSupport

/// The lease logic on a manual clock, against the test API server: no test here waits for a lease
/// to expire in real time.
@Suite("Leader election on a manual clock")
struct LeaderElectorTests {
    static func options(_ identity: String) -> LeaderElectionOptions {
        var options = LeaderElectionOptions(namespace: "kubebridge", identity: identity)
        options.retryPeriod = .seconds(2)
        options.leaseDuration = .seconds(15)
        options.renewDeadline = .seconds(10)
        return options
    }

    static func withCluster(_ body: (TestCluster) async throws -> Void) async throws {
        try await TestCluster.with { cluster in
            _ = try await cluster.client.create(TestCluster.namespaces, namespace: nil,
                                                json: #"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"kubebridge"}}"#)
            try await body(cluster)
        }
    }

    /// Lets every task sleeping on `clock` run one round: waits until `sleepers` sleep, then moves
    /// the clock past the longest (jittered) retry period.
    static func round(_ clock: ManualClock, sleepers: Int) async throws {
        try await clock.waitForSleepers(sleepers)
        clock.advance(by: .milliseconds(2400))
    }

    @Test("a candidate stands by while the leader renews, however long; once renewals stop it takes the lease after leaseDuration on its own clock, not before")
    func takeoverAfterLeaseDuration() async throws {
        try await Self.withCluster { cluster in
            let clock = ManualClock()
            let leader = try LeaderElector(client: cluster.client, options: Self.options("a"), clock: clock, logger: CapturedLogs().logger)
            let candidate = try LeaderElector(client: cluster.client, options: Self.options("b"), clock: clock, logger: CapturedLogs().logger)
            try await leader.acquire()
            let holding = Task { try await leader.hold() }
            let acquired = Ending()
            let standingBy = Task {
                do {
                    try await candidate.acquire()
                    acquired.finish(nil, at: clock.now.offset)
                } catch {
                    acquired.finish(error)
                }
            }
            // Thirty seconds of renewals: twice the lease's duration.
            for _ in 0..<13 { try await Self.round(clock, sleepers: 2) }
            #expect(!acquired.finished, "the candidate took a lease its holder renews")
            // Both asleep: the leader's last renewal is written, at `stopped`.
            try await clock.waitForSleepers(2)
            holding.cancel()
            _ = try? await holding.value
            let stopped = clock.now.offset
            while !acquired.finished, clock.now.offset - stopped < .seconds(30) {
                try await Self.round(clock, sleepers: 1)
                try await waitUntil { acquired.finished || clock.sleeping == 1 }
            }
            await standingBy.value
            let takeover = try #require(acquired.at, "no takeover within 30 s: \(String(describing: acquired.error))") - stopped
            // Never before leaseDuration after the last renewal; at the latest one round later (the
            // candidate may read before the leader writes) and one round of granularity after that.
            #expect(takeover >= .seconds(15) && takeover <= .seconds(15) + .milliseconds(4800), "\(takeover)")
            #expect(await candidate.isLeader)
        }
    }

    @Test("a leader that cannot renew gives the lease up as lost after renewDeadline on its clock, not before")
    func renewDeadline() async throws {
        try await Self.withCluster { cluster in
            let clock = ManualClock()
            let leader = try LeaderElector(client: cluster.client, options: Self.options("a"), clock: clock, logger: CapturedLogs().logger)
            try await leader.acquire()
            let ending = Ending()
            let holding = Task {
                do {
                    try await leader.hold()
                    ending.finish(nil)
                } catch {
                    ending.finish(error)
                }
            }
            for _ in 0..<3 { try await Self.round(clock, sleepers: 1) }
            // Asleep again: the last renewal succeeded.
            try await clock.waitForSleepers(1)
            _ = try await cluster.server.inject(FaultRule(verbs: [.get, .update], resource: "leases", action: .status(code: 500, reason: "InternalError", message: "etcd away")))
            var failing: Duration = .zero
            while failing < .seconds(30) {
                try await clock.waitForSleepers(1)
                clock.advance(by: .seconds(2))
                failing += .seconds(2)
                try await waitUntil { clock.sleeping == 1 || ending.finished }
                if ending.finished { break }
            }
            await holding.value
            #expect(ending.error is LeadershipLost, "\(String(describing: ending.error))")
            // Renewals every 2 s; the first failed one 2 s after the last success: lost on the
            // first failure at or past 10 s since it.
            #expect(failing == .seconds(10), "lost after \(failing) of failed renewals")
            #expect(await !leader.isLeader)
        }
    }
}
