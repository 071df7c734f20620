import BridgeCore
import FileSink
import Foundation
import KafkaSink
import KubeModel
import Logging
import Synchronization
import Testing
import TestSupport

@Suite("Kafka sink under broker faults")
struct KafkaFaultTests {
    static var pipelineOptions: Pipeline.Options {
        var options = Pipeline.Options()
        options.retry = Backoff(initial: .milliseconds(50), maximum: .milliseconds(200))
        return options
    }

    /// A pipeline into a Kafka sink whose acknowledgements move a ledger's watermark.
    final class Harness: Sendable {
        final class Tracker: Sendable {
            let state: Mutex<DeliveryLedger>
            init(_ ledger: DeliveryLedger) { state = Mutex(ledger) }
        }

        let ledger: Tracker
        let pipeline: Pipeline
        let runner: Task<Void, any Error>

        init(sink: KafkaSink, ledger: DeliveryLedger, deadLetters: DeadLetterFile? = nil) {
            let shared = Tracker(ledger)
            self.ledger = shared
            pipeline = Pipeline(sink: sink, index: 0, options: KafkaFaultTests.pipelineOptions, deadLetters: deadLetters,
                                logger: Logger(label: "test")) { tokens, sink in
                shared.state.withLock { ledger in for token in tokens { _ = ledger.acknowledged(token, sink: sink) } }
            }
            let pipeline = pipeline
            runner = Task { try await pipeline.run() }
        }

        var watermark: String? { ledger.state.withLock { $0.watermark(of: KafkaTestSupport.scope) } }

        func finish() async throws {
            pipeline.finish()
            try await runner.value
        }
    }

    @Test("brokers down at the start and for a while: events wait, the watermark holds, and once the broker is back every change arrives with each object's latest change last")
    func brokerDownThenUp() async throws {
        let cluster = try KafkaMockCluster()
        defer { cluster.close() }
        cluster.createTopic("kube.apps.deployments")
        cluster.setBrokerDown(1)
        var options = KafkaSinkOptions(brokers: [cluster.bootstrapServers])
        // Messages time out quickly, so the pipeline's own retries are exercised too.
        options.properties["message.timeout.ms"] = "1000"
        let sink = try KafkaSink(options: options)
        var ledger = DeliveryLedger(sinkCount: 1)
        let events = try KafkaTestSupport.events(objects: 20, changes: 10, ledger: &ledger)
        let harness = Harness(sink: sink, ledger: ledger)
        for event in events { try await harness.pipeline.enqueue(event) }
        try await waitUntil(timeout: .seconds(60)) { harness.pipeline.retried > 0 }
        #expect(harness.pipeline.delivered == 0)
        #expect(harness.watermark == nil, "nothing is confirmed while the broker is down")
        cluster.setBrokerUp(1)
        try await waitUntil(timeout: .seconds(30)) { harness.pipeline.delivered == events.count }
        #expect(harness.watermark == events.last?.envelope.extensions.first { $0.name == "resourceversion" }?.value)
        try await harness.finish()
        try await sink.close()

        let seen = try await KafkaTopicReader.read(bootstrap: cluster.bootstrapServers, topics: ["kube.apps.deployments"])
        #expect(Set(seen.map(\.id)) == Set(events.map(\.envelope.id)), "every change arrived")
        var last: [String: String] = [:]
        for record in seen { last[record.key] = record.id }
        for object in 0..<20 {
            #expect(last["uid-\(object)"] == events.last { $0.envelope.partitionKey == "uid-\(object)" }?.envelope.id)
        }
    }

    @Test("produce requests failing with retriable broker errors: librdkafka retries, idempotence leaves exactly one record per change, in order")
    func retriableRequestErrors() async throws {
        let cluster = try KafkaMockCluster()
        defer { cluster.close() }
        cluster.createTopic("kube.apps.deployments")
        // NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS.
        cluster.failProduceRequests(with: [6, 7, 19, 6])
        let sink = try KafkaSink(options: KafkaSinkOptions(brokers: [cluster.bootstrapServers]))
        var ledger = DeliveryLedger(sinkCount: 1)
        let events = try KafkaTestSupport.events(objects: 5, changes: 20, ledger: &ledger)
        let outcomes = await sink.deliver(events)
        #expect(outcomes.allSatisfy { $0 == .delivered }, "\(Set(outcomes.map { "\($0)" }))")
        try await sink.close()
        let records = try await KafkaTopicReader.read(bootstrap: cluster.bootstrapServers, topics: ["kube.apps.deployments"])
        #expect(records.map(\.id) == events.map(\.envelope.id))
    }

    @Test("an object larger than message.max.bytes is rejected into the dead-letter file; the events around it are delivered")
    func oversizedObject() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kubebridge-kafka-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let cluster = try KafkaMockCluster()
        defer { cluster.close() }
        cluster.createTopic("kube.apps.deployments")
        var options = KafkaSinkOptions(brokers: [cluster.bootstrapServers])
        options.properties["message.max.bytes"] = "100000"
        let sink = try KafkaSink(options: options)
        var ledger = DeliveryLedger(sinkCount: 1)
        let small = try KafkaTestSupport.events(objects: 2, changes: 1, ledger: &ledger)
        let large = try KafkaTestSupport.events(objects: 1, changes: 1, ledger: &ledger, payload: 150_000, firstVersion: 500)
        let tail = try KafkaTestSupport.events(objects: 2, changes: 1, ledger: &ledger, firstVersion: 600)
        let deadLetterPath = directory.appendingPathComponent("dead-letters.jsonl").path
        let harness = Harness(sink: sink, ledger: ledger, deadLetters: try DeadLetterFile(path: deadLetterPath))
        for event in small + large + tail { try await harness.pipeline.enqueue(event) }
        try await harness.finish()
        try await sink.close()
        #expect(harness.pipeline.deadLettered == 1)
        #expect(harness.pipeline.delivered == 5, "a dead-lettered event counts as delivered")
        #expect(harness.watermark == "602", "the rejected event does not hold the watermark")
        let deadLetters = try String(contentsOfFile: deadLetterPath, encoding: .utf8)
        #expect(deadLetters.contains(#""id":"\#(large[0].envelope.id)""#))
        #expect(deadLetters.contains("Kafka refused the message"))
        let records = try await KafkaTopicReader.read(bootstrap: cluster.bootstrapServers, topics: ["kube.apps.deployments"])
        #expect(records.map(\.id) == (small + tail).map(\.envelope.id))
    }

    @Test("a topic the producer may not write to stops the sink with SinkStopped and confirms nothing")
    func notAuthorized() async throws {
        let cluster = try KafkaMockCluster()
        defer { cluster.close() }
        cluster.createTopic("kube.apps.deployments")
        // TOPIC_AUTHORIZATION_FAILED, for every attempt librdkafka might make.
        cluster.failProduceRequests(with: Array(repeating: 29, count: 20))
        let sink = try KafkaSink(options: KafkaSinkOptions(brokers: [cluster.bootstrapServers]))
        var ledger = DeliveryLedger(sinkCount: 1)
        let events = try KafkaTestSupport.events(objects: 3, changes: 2, ledger: &ledger)
        let harness = Harness(sink: sink, ledger: ledger)
        for event in events { try await harness.pipeline.enqueue(event) }
        let error = await #expect(throws: SinkStopped.self) { try await harness.runner.value }
        #expect(error?.reason.contains("authorization") == true, "\(String(describing: error))")
        #expect(harness.pipeline.delivered == 0)
        #expect(harness.watermark == nil)
        try await sink.close()
    }

    @Test("configuration mistakes are reported before anything is sent, in Kafka's and kubebridge's words")
    func configurationErrors() throws {
        var options = KafkaSinkOptions(brokers: ["127.0.0.1:9092"])
        options.topic = "kube.{kind}"
        #expect { try KafkaSink(options: options) } throws: { "\($0)".contains("unknown placeholder") }
        options.topic = "kube/{resource}"
        #expect { try KafkaSink(options: options) } throws: { "\($0)".contains("which Kafka does not accept") }
        options.topic = "kube.{resource}"
        options.properties["acks"] = "sometimes"
        #expect { try KafkaSink(options: options) } throws: { "\($0)".contains("acks=sometimes") }
        options.properties = ["compression.codec": "zip"]
        #expect { try KafkaSink(options: options) } throws: { "\($0)".contains("compression.codec") }
    }
}
