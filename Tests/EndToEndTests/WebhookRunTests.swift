import Foundation
import KubeTestServer
import Testing
import TestSupport

@Suite("kubebridge run into a webhook, as a process")
struct WebhookRunTests {
    @Test("into a signed webhook and a file at once, SIGKILLed five times under churn, the receiver failing for a stretch: every change arrives, in order per object")
    func crashesIntoWebhook() async throws {
        let secret = "whsec_" + Data("kubebridge-run-test".utf8).base64EncodedString()
        let receiver = try await WebhookReceiver.start(secret: secret)
        let server = try await RunCommandTests.server(history: true)
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let secretFile = directory.appendingPathComponent("webhook-secret").path
        try secret.write(toFile: secretFile, atomically: true, encoding: .utf8)
        let bridge = try BridgeProcess(server: server, directory: directory, extraSinks: """
              - type: webhook
                name: hook
                url: \(receiver.url)
                signingSecretFile: \(secretFile)
                concurrency: 4
                retry: {initial: 100ms, maximum: 1s}
                batch: {linger: 1ms}
            """)
        try await receiver.script([.status(503, seconds: 1.5), .drop(times: 5), .status(500, times: 5)])
        let (history, finalVersion) = try await CrashRun.run(server: server, bridge: bridge, kills: 5, alive: 600...1500)
        func delivered() -> [DeliveryAudit.Delivered] { receiver.events().compactMap { DeliveryAudit.Delivered($0) } }
        try await waitUntil(timeout: .seconds(60), interval: .seconds(1)) {
            delivered().contains { $0.resourceVersion == finalVersion }
        }
        let exit = await bridge.stop()
        #expect(exit == 0, "\(((try? String(contentsOf: bridge.log, encoding: .utf8)) ?? "").suffix(3000))")
        let events = delivered()
        let fileEvents = bridge.events().compactMap { DeliveryAudit.Delivered($0) }
        let (audit, fileAudit) = DeliveryAudit.pair(events, file: fileEvents, history: history)
        #expect(audit.missing.isEmpty, "missing at the receiver: \(audit.missing.prefix(20))")
        #expect(fileAudit.missing.isEmpty, "missing in the file: \(fileAudit.missing.prefix(20))")
        #expect(audit.disorder.isEmpty, "out of order: \(audit.disorder.prefix(20))")
        #expect(audit.conflicting.isEmpty, "one id for two states: \(audit.conflicting.prefix(20))")
        let stats = try await receiver.stats()
        #expect(stats.badSignatures == 0 && stats.parseErrors == 0 && stats.overlaps == 0)
        #expect((stats.statuses["503"] ?? 0) > 0, "the receiver's failing stretch was never hit")
        print("webhook crash test: \(history.count) changes made, \(events.count) events received, \(audit.duplicates) duplicates, \(audit.missing.count) missing, statuses \(stats.statuses)")
        try await server.stop()
        await receiver.stop()
    }
}
