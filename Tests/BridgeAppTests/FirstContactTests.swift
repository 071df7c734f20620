import BridgeApp
import BridgeCore
import Foundation
import KubeAPI
import KubeModel
import KubeTestServer
import Synchronization
import Testing
import TestSupport

@Suite("First contact with the API server")
struct FirstContactTests {
    final class Reasons: Sendable {
        let list = Mutex<[String]>([])
    }

    static func configuration(_ cluster: TestCluster) throws -> Configuration {
        let kubeconfig = cluster.directory.appendingPathComponent("kubeconfig").path
        return try Configuration.parse("""
            cluster:
              kubeconfig: \(kubeconfig)
            state:
              directory: \(cluster.directory.path)/state
            sinks:
              - {type: file, path: \(cluster.directory.path)/events.jsonl}
            """, file: "bridge.yaml")
    }

    @Test("an API server that drops every connection is waited for: said once, tried again on the backoff's schedule, readiness hears why each time, and it goes on once the server answers")
    func waitsWithBackoff() async throws {
        try await TestCluster.with { cluster in
            _ = try await cluster.server.inject(FaultRule(verbs: [.discovery], action: .dropConnection))
            let logs = CapturedLogs()
            let clock = ManualClock()
            let reasons = Reasons()
            let configuration = try Self.configuration(cluster)
            let contact = Task {
                try await BridgeRuntime.waitForFirstContact(
                    configuration: configuration, logger: logs.logger, backoff: Backoff(initial: .seconds(1), maximum: .seconds(8)),
                    clock: clock, waiting: { reason in reasons.list.withLock { $0.append(reason) } })
            }
            let rounds = 6
            for _ in 0..<rounds {
                try await clock.waitForSleepers()
                clock.advance(by: .seconds(8))
            }
            try await clock.waitForSleepers()
            let slept = clock.requestedSleeps
            // Jittered to [0.5, 1] of 1, 2, 4, 8, 8, 8... seconds.
            let bases: [Double] = [1, 2, 4, 8, 8, 8, 8]
            #expect(slept.count == rounds + 1)
            for (duration, base) in zip(slept, bases) {
                #expect(duration >= .seconds(base * 0.5) && duration <= .seconds(base), "\(slept)")
            }
            let waiting = logs.messages.filter { $0.contains("waiting for the API server") }
            #expect(waiting.count == 1 && waiting[0].hasPrefix("warning"), "\(logs.messages)")
            let heard = reasons.list.withLock { $0 }
            #expect(heard.count == rounds + 1)
            #expect(heard.allSatisfy { $0.hasPrefix("waiting for the API server: ") && $0.contains(cluster.server.url.replacingOccurrences(of: "https://", with: "")) }, "\(heard)")

            try await cluster.server.clearFaults()
            clock.advance(by: .seconds(8))
            try await contact.value
            #expect(logs.messages.last?.contains("answers; starting") == true, "\(logs.messages)")
        }
    }

    @Test("a server that refuses the credentials ends it at once, without waiting")
    func refusedCredentials() async throws {
        try await TestCluster.with(user: .token("not-a-token")) { cluster in
            let clock = ManualClock()
            let error = await #expect(throws: KubeAPIError.self) {
                try await BridgeRuntime.waitForFirstContact(configuration: try Self.configuration(cluster), logger: CapturedLogs().logger, clock: clock)
            }
            #expect(error?.isUnauthorized == true)
            #expect(clock.requestedSleeps.isEmpty)
        }
    }
}
