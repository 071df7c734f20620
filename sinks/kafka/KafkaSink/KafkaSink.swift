import BridgeCore
import Foundation
import Logging
import NIOCore

/// How the Kafka sink connects and what it writes.
public struct KafkaSinkOptions: Sendable {
    /// The modes of the CloudEvents Kafka binding.
    public static let modes: [ContentMode] = [.binary, .structured]

    /// `host:port` of the brokers to bootstrap from.
    public var brokers: [String]
    /// The topic of each event: `{group}` (`core` for the core group), `{version}`, `{resource}`
    /// and `{namespace}` (`_cluster` for cluster-scoped objects) are replaced.
    public var topic = "kube.{group}.{resource}"
    public var mode = ContentMode.binary
    /// Each event carries its merge patch (`mergepatch`), when there is one; in binary mode as
    /// the `ce_mergepatch` header up to `Envelope.patchHeaderLimit` bytes, else `ce_patchomitted`.
    public var mergePatch = false
    /// librdkafka's `compression.codec`.
    public var compression = "lz4"
    /// Any librdkafka property (`security.protocol`, `sasl.*`, `ssl.*`, `linger.ms`, ...); these
    /// override kubebridge's defaults.
    public var properties: [String: String] = [:]

    public init(brokers: [String]) {
        self.brokers = brokers
    }

    /// Large batches, several in flight: librdkafka's queue stays full while the reports of the
    /// earlier batches come back.
    public static var defaultPipeline: Pipeline.Options {
        var options = Pipeline.Options()
        options.batchSize = 2000
        options.batchBytes = 16 * 1024 * 1024
        options.maxBufferedEvents = 10_000
        options.batchesInFlight = 4
        return options
    }

    /// kubebridge's producer defaults, then the configured properties.
    public var producerProperties: [String: String] {
        var properties = [
            "bootstrap.servers": brokers.joined(separator: ","),
            "client.id": "kubebridge",
            // Persisted by every in-sync replica, and no duplicates or reordering on retries.
            "enable.idempotence": "true",
            "acks": "all",
            "compression.codec": compression,
            "linger.ms": "5",
            // Small requests go out at once: with Nagle's algorithm, a produce request waits for
            // the previous one's TCP acknowledgement (up to 40 ms), and each batch pays for it.
            "socket.nagle.disable": "true",
            "batch.num.messages": "10000",
            // A message not delivered within a minute is reported, and the pipeline retries it.
            "message.timeout.ms": "60000",
            "queue.buffering.max.messages": "100000",
        ]
        for (key, value) in self.properties { properties[key] = value }
        return properties
    }

    /// Checks every producer property with librdkafka, without connecting.
    public func validateProperties() throws {
        try RDKafkaProducer.validate(properties: producerProperties)
    }

    /// Checks the topic template against Kafka's topic-name rules.
    public func validate() throws {
        let known = ["{group}", "{version}", "{resource}", "{namespace}"]
        var rest = topic
        for placeholder in known { rest = rest.replacingOccurrences(of: placeholder, with: "") }
        if rest.contains("{") || rest.contains("}") {
            throw KafkaConfigurationError(description: "topic \"\(topic)\": unknown placeholder; the known ones are \(known.joined(separator: ", "))")
        }
        let sample = KafkaSink.render(topic, group: "apps", version: "v1", resource: "deployments", namespace: "default")
        guard KafkaSink.isValidTopic(sample) else {
            throw KafkaConfigurationError(description: "topic \"\(topic)\" gives \"\(sample)\", which Kafka does not accept: a topic has 1 to 249 characters of a-z A-Z 0-9 . _ -")
        }
        guard KafkaSinkOptions.modes.contains(mode) else {
            throw KafkaConfigurationError(description: "mode: the CloudEvents Kafka binding has no \(mode.rawValue) mode; use binary or structured")
        }
        guard !brokers.isEmpty else {
            throw KafkaConfigurationError(description: "brokers: at least one host:port is needed")
        }
    }
}

/// Delivers events to Kafka through librdkafka. An event is acknowledged only when its delivery
/// report says the brokers persisted it (acks=all). Its key is the object's uid, so an object's
/// changes share a partition and keep their order.
public final class KafkaSink: Sink {
    public let name: String
    public let options: KafkaSinkOptions
    let producer: RDKafkaProducer
    let topicTemplate: DestinationTemplate

    public init(name: String = "kafka", options: KafkaSinkOptions, logger: Logger = Logger(label: "kubebridge")) throws {
        try options.validate()
        self.name = name
        self.options = options
        topicTemplate = DestinationTemplate(options.topic)
        var logger = logger
        logger[metadataKey: "sink"] = "\(name)"
        producer = try RDKafkaProducer(properties: options.producerProperties, logger: logger)
    }

    static func render(_ template: String, group: String, version: String, resource: String, namespace: String) -> String {
        DestinationTemplate(template).render(group: group, version: version, resource: resource, namespace: namespace, name: { "" })
    }

    /// Kafka's rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, and not `.` or `..`.
    static func isValidTopic(_ topic: String) -> Bool {
        guard (1...249).contains(topic.utf8.count), topic != ".", topic != ".." else { return false }
        return topic.utf8.allSatisfy { byte in
            (0x61...0x7A).contains(byte) || (0x41...0x5A).contains(byte) || (0x30...0x39).contains(byte)
                || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
        }
    }

    func topic(for event: OutboundEvent) -> String {
        topicTemplate.render(event, clusterScoped: "_cluster")
    }

    /// The headers of an event's record in `mode`.
    public static func headers(of event: OutboundEvent, mode: ContentMode, mergePatch: Bool = false) -> [(name: String, value: String)] {
        var headers: [(name: String, value: String)] = []
        message(for: event, topic: "", mode: mode, mergePatch: mergePatch).headers.forEach { headers.append(($0, $1)) }
        return headers
    }

    static let structuredHeaders: [(name: String, value: String)] = [("content-type", "application/cloudevents+json; charset=UTF-8")]

    /// The `ce_` header of each extension attribute kubebridge writes, made once rather than per
    /// message (and found by comparing a few short strings, cheaper than hashing one).
    static let headerNames = EnvelopeBuilder.extensionNames.map { "ce_" + $0 }

    static func headerName(_ extensionName: String) -> String {
        EnvelopeBuilder.extensionNames.firstIndex(of: extensionName).map { headerNames[$0] } ?? "ce_" + extensionName
    }

    /// The record of an event in the binding's mode.
    static func message(for event: OutboundEvent, topic: String, mode: ContentMode, mergePatch: Bool) -> KafkaMessage {
        let envelope = event.envelope
        switch mode {
        case .structured:
            return KafkaMessage(topic: topic, key: envelope.partitionKey, value: envelope.structured(patch: mergePatch), headers: .list(structuredHeaders))
        case .binary:
            return KafkaMessage(topic: topic, key: envelope.partitionKey, value: envelope.data,
                                headers: .attributes(envelope, envelope.extensions(patch: mergePatch ? .upTo(Envelope.patchHeaderLimit) : .none)))
        case .batch:
            preconditionFailure("the Kafka binding has no batch mode, and KafkaSinkOptions.validate says so")
        }
    }

    public func deliver(_ batch: [OutboundEvent]) async -> [DeliveryOutcome] {
        await send(batch).outcomes()
    }

    /// Hands the batch to librdkafka in order; its delivery reports are awaited later, so the next
    /// batches go out meanwhile, and order per partition holds across them.
    public func send(_ batch: [OutboundEvent]) async -> PendingDelivery {
        if let fatal = producer.fatal { return .settled(batch.map { _ in .fatal("the Kafka producer stopped: \(fatal)") }) }
        var produced: [(index: Int, topic: String)] = []
        produced.reserveCapacity(batch.count)
        var invalid: [Int: DeliveryOutcome] = [:]
        for (index, event) in batch.enumerated() {
            let topic = topic(for: event)
            guard Self.isValidTopic(topic) else {
                invalid[index] = .rejected("the topic \"\(topic)\" is not a valid Kafka topic name")
                continue
            }
            produced.append((index, topic))
        }
        let (mode, mergePatch) = (options.mode, options.mergePatch)
        let reports = await producer.produce(count: produced.count) {
            Self.message(for: batch[produced[$0].index], topic: produced[$0].topic, mode: mode, mergePatch: mergePatch)
        }
        let producer = producer
        return PendingDelivery { [invalid] in
            var produced = await reports.wait().makeIterator()
            var outcomes: [DeliveryOutcome] = []
            outcomes.reserveCapacity(batch.count)
            for index in batch.indices {
                if !invalid.isEmpty, let outcome = invalid[index] {
                    outcomes.append(outcome)
                    continue
                }
                switch produced.next()! {
                case .persisted:
                    outcomes.append(.delivered)
                case .failed(_, let message, let kind):
                    switch kind {
                    case .rejected: outcomes.append(.rejected("Kafka refused the message: \(message)"))
                    case .fatal: outcomes.append(.fatal("Kafka: \(producer.fatal ?? message)"))
                    case .retriable: outcomes.append(.retriable("Kafka: \(message)"))
                    }
                }
            }
            return outcomes
        }
    }

    public func close() async throws {
        await producer.close(timeout: .seconds(10))
    }
}

/// A record's headers: in binary mode the envelope's attributes, read from it as they are handed
/// to librdkafka (which copies them) rather than gathered in an array per record first.
enum KafkaHeaders: Sendable {
    case attributes(Envelope, [(name: String, value: String)])
    case list([(name: String, value: String)])

    /// How many `forEach` hands over: librdkafka's list is made with room for them.
    var count: Int {
        switch self {
        case .attributes(_, let extensions): 7 + extensions.count
        case .list(let headers): headers.count
        }
    }

    func forEach(_ body: (_ name: String, _ value: String) -> Void) {
        switch self {
        case .attributes(let envelope, let extensions):
            body("content-type", Envelope.dataContentType)
            body("ce_specversion", "1.0")
            body("ce_id", envelope.id)
            body("ce_source", envelope.source)
            body("ce_type", envelope.type)
            body("ce_subject", envelope.subject)
            body("ce_time", envelope.time)
            for (name, value) in extensions { body(KafkaSink.headerName(name), value) }
        case .list(let headers):
            for (name, value) in headers { body(name, value) }
        }
    }
}
