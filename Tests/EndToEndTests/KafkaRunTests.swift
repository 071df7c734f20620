import Foundation
import KubeTestServer
import Testing
import TestSupport

@Suite("kubebridge run into Kafka, as a process")
struct KafkaRunTests {
    @Test("into tansu (a Kafka broker written apart from librdkafka) and a file at once, SIGKILLed five times under churn: the topics hold every change, each object in one partition, in order")
    func crashesIntoKafka() async throws {
        let broker = try await TansuBroker.start()
        let server = try await RunCommandTests.server(history: true)
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let bridge = try BridgeProcess(server: server, directory: directory, extraSinks: """
              - type: kafka
                name: kafka
                brokers: [\(broker.bootstrapServers)]
                topic: kube.{group}.{resource}
                batch: {linger: 1ms}
            """)
        let (history, finalVersion) = try await CrashRun.run(server: server, bridge: bridge, kills: 5, alive: 600...1500)
        let topics = ["kube.core.configmaps", "kube.core.secrets", "kube.apps.deployments", "kube.example.com.widgets"]
        try await waitUntil(timeout: .seconds(60), interval: .seconds(1)) {
            try await KafkaTopicReader.read(bootstrap: broker.bootstrapServers, topics: topics)
                .contains { Int64($0.attributes["resourceversion"] ?? "") == finalVersion }
        }
        // A graceful stop delivers what the Kafka pipeline still holds.
        #expect(await bridge.stop() == 0)
        let records = try await KafkaTopicReader.read(bootstrap: broker.bootstrapServers, topics: topics)
        let delivered = records.compactMap { DeliveryAudit.Delivered(attributes: $0.attributes) }
        #expect(delivered.count == records.count, "every record carries id, uid, resourceversion and changetype")
        let fileEvents = bridge.events().compactMap { DeliveryAudit.Delivered($0) }
        let (audit, fileAudit) = DeliveryAudit.pair(delivered, file: fileEvents, history: history)
        #expect(fileAudit.missing.isEmpty, "missing in the file: \(fileAudit.missing.prefix(20))")
        let problems = ((try? String(contentsOf: bridge.log, encoding: .utf8)) ?? "").split(separator: "\n")
            .filter { $0.contains(" warning ") || $0.contains(" error ") || $0.contains(" critical ") }
        #expect(audit.missing.isEmpty, "missing: \(audit.missing.prefix(20))\n\(problems.prefix(30).joined(separator: "\n"))")
        #expect(audit.disorder.isEmpty, "out of order: \(audit.disorder.prefix(20))")
        #expect(audit.conflicting.isEmpty, "one id, two contents: \(audit.conflicting.prefix(20))")
        var partitions: [String: Set<Int>] = [:]
        for record in records { partitions["\(record.topic)/\(record.key)", default: []].insert(record.partition) }
        #expect(partitions.values.allSatisfy { $0.count == 1 }, "an object's changes share a partition")
        #expect(records.allSatisfy { $0.contentType == "application/json" && $0.key == $0.attributes["uid"] })
        #expect(Set(records.map(\.topic)).count == 4, "\(Set(records.map(\.topic)))")
        print("kafka crash test: \(history.count) changes made, \(records.count) records, \(audit.duplicates) duplicates, \(audit.missing.count) missing")
        try await server.stop()
        await broker.stop()
    }
}
