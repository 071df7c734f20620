import BridgeCore
import Foundation
import KafkaSink
import Testing
import TestSupport

@Suite("Kafka sink against librdkafka's mock cluster")
struct KafkaSinkTests {
    @Test("binary and structured mode: every record parses with the CloudEvents Kafka binding; keys are uids; order holds per key",
          arguments: KafkaSinkOptions.modes)
    func roundTrip(mode: ContentMode) async throws {
        let cluster = try KafkaMockCluster()
        defer { cluster.close() }
        var options = KafkaSinkOptions(brokers: [cluster.bootstrapServers])
        options.mode = mode
        options.topic = "kube.{group}.{resource}"
        cluster.createTopic("kube.apps.deployments", partitions: 1)
        let sink = try KafkaSink(options: options)
        var ledger = DeliveryLedger(sinkCount: 1)
        let events = try KafkaTestSupport.events(objects: 3, changes: 4, ledger: &ledger)
        let outcomes = await sink.deliver(events)
        #expect(outcomes.allSatisfy { $0 == .delivered }, "\(outcomes)")
        try await sink.close()
        let records = try await KafkaTopicReader.read(bootstrap: cluster.bootstrapServers, topics: ["kube.apps.deployments"])
        #expect(records.map(\.id) == events.map(\.envelope.id), "the topic holds every event, in order")
        for (record, event) in zip(records, events) {
            #expect(record.key == event.envelope.partitionKey, "the key is the uid")
            #expect(record.type == event.envelope.type)
            #expect(record.attributes["source"] == event.envelope.source)
            #expect(record.attributes["subject"] == event.envelope.subject)
            #expect(record.attributes["resourceversion"] == event.envelope.extensions.first { $0.name == "resourceversion" }?.value)
            #expect(record.attributes["changetype"] == (event.envelope.id.hasSuffix("/101") || event.envelope.id.hasSuffix("/102")
                                                        || event.envelope.id.hasSuffix("/103") ? "added" : "modified"))
            #expect(record.dataKind == "Deployment")
            #expect(record.contentType == (mode == .binary ? "application/json" : "application/cloudevents+json; charset=UTF-8"))
        }
    }

    @Test("with diff: mergePatch, each change after an object's first carries its merge patch, read back by the CloudEvents SDK",
          arguments: KafkaSinkOptions.modes)
    func mergePatch(mode: ContentMode) async throws {
        let cluster = try KafkaMockCluster()
        defer { cluster.close() }
        var options = KafkaSinkOptions(brokers: [cluster.bootstrapServers])
        (options.mode, options.mergePatch, options.topic) = (mode, true, "kube.{group}.{resource}")
        cluster.createTopic("kube.apps.deployments", partitions: 1)
        let sink = try KafkaSink(options: options)
        var ledger = DeliveryLedger(sinkCount: 1)
        let events = try SampleEvents.make(scope: KafkaTestSupport.scope, kind: "Deployment", namespace: "shop", names: ["web"], changes: 3,
                                           ledger: &ledger, comparing: true)
        #expect(await sink.deliver(events).allSatisfy { $0 == .delivered })
        try await sink.close()
        let records = try await KafkaTopicReader.read(bootstrap: cluster.bootstrapServers, topics: ["kube.apps.deployments"])
        #expect(records.map { $0.attributes["mergepatch"] } == [nil, #"{"metadata":{"resourceVersion":"102"},"spec":{"replicas":1}}"#,
                                                                 #"{"metadata":{"resourceVersion":"103"},"spec":{"replicas":2}}"#])
        #expect(records.map { $0.attributes["changedpaths"] } == [nil, "/spec/replicas", "/spec/replicas"])
    }
}
