import Foundation
import KubeAPI

/// Reads Kafka topics as a user's consumer would: the Python confluent-kafka client, each record
/// parsed by the CloudEvents SDK's Kafka binding.
public enum KafkaTopicReader {
    /// One record.
    public struct Record: Sendable {
        public var topic: String
        public var partition: Int
        public var offset: Int
        public var key: String
        public var contentType: String
        /// The event's attributes as the SDK read them (extensions included), as strings.
        public var attributes: [String: String]
        /// `kind` of the object in `data`.
        public var dataKind: String?

        public var id: String { attributes["id"] ?? "" }
        public var type: String { attributes["type"] ?? "" }
    }

    /// Reads each partition to the end its fetch responses report (partition EOF), not to the
    /// offset ListOffsets gave: a broker's ListOffsets may lag behind what it serves (tansu's does).
    static let script = """
        import json, sys, time
        from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING, KafkaError
        from cloudevents.core.bindings import kafka as cekafka
        consumer = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "kubebridge-test", "enable.auto.commit": False,
                             "enable.partition.eof": True})
        assignment = []
        for topic in sys.argv[2:]:
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                assignment.append(TopicPartition(topic, p, OFFSET_BEGINNING))
        left = {(tp.topic, tp.partition) for tp in assignment}
        consumer.assign(assignment)
        deadline = time.monotonic() + 120
        last_error = None
        while left and time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    left.discard((message.topic(), message.partition()))
                else:
                    last_error = message.error()
                continue
            headers = {k: v for k, v in (message.headers() or [])}
            event = cekafka.from_kafka_event(cekafka.KafkaMessage(headers=headers, key=message.key(), value=message.value()))
            data = event.get_data()
            print(json.dumps({
                "topic": message.topic(), "partition": message.partition(), "offset": message.offset(), "key": message.key().decode(),
                "contentType": headers.get("content-type", b"").decode(),
                "attributes": {k: str(v) for k, v in event.get_attributes().items()},
                "dataKind": data.get("kind") if isinstance(data, dict) else None,
            }))
        consumer.close()
        if left:
            sys.exit("partitions not read to their end: %r (last error: %s)" % (sorted(left), last_error))
        """

    /// Every record of `topics`, each partition read to its end; records of one partition in order.
    public static func read(bootstrap: String, topics: [String]) async throws -> [Record] {
        let result = try await ProcessRunner.runBinary("/usr/bin/env", ["python3", "-c", script, bootstrap] + topics, timeout: 180)
        guard result.status == 0 else {
            throw TestFailure(message: "the Kafka consumer failed: \(String(decoding: result.stderr, as: UTF8.self))")
        }
        return try String(decoding: result.stdout, as: UTF8.self).split(separator: "\n").map { line in
            guard let fields = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let topic = fields["topic"] as? String, let partition = fields["partition"] as? Int, let offset = fields["offset"] as? Int, let key = fields["key"] as? String,
                  let contentType = fields["contentType"] as? String, let attributes = fields["attributes"] as? [String: String]
            else { throw TestFailure(message: "unexpected consumer output: \(line)") }
            return Record(topic: topic, partition: partition, offset: offset, key: key, contentType: contentType, attributes: attributes,
                          dataKind: fields["dataKind"] as? String)
        }
    }
}
