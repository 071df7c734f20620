import CRdKafka
import Foundation

/// librdkafka's mock cluster: real Kafka-protocol brokers on 127.0.0.1, inside this process, with
/// fault injection. For tests and benchmarks.
public final class KafkaMockCluster: Sendable {
    private let host: ProducerHandle
    private let cluster: MockHandle
    public let bootstrapServers: String

    struct MockHandle: @unchecked Sendable {
        let pointer: OpaquePointer
    }

    public init(brokers: Int = 1) throws {
        var errorText = [CChar](repeating: 0, count: 512)
        let configuration = rd_kafka_conf_new()
        // The host handle only carries the cluster; it must not log that it has no bootstrap servers.
        rd_kafka_conf_set(configuration, "log_level", "0", &errorText, errorText.count)
        guard let host = rd_kafka_new(RD_KAFKA_PRODUCER, configuration, &errorText, errorText.count) else {
            throw KafkaConfigurationError(description: "the mock cluster's host could not start: \(cString(errorText))")
        }
        guard let cluster = rd_kafka_mock_cluster_new(host, Int32(brokers)) else {
            rd_kafka_destroy(host)
            throw KafkaConfigurationError(description: "the mock cluster could not start")
        }
        self.host = ProducerHandle(pointer: host)
        self.cluster = MockHandle(pointer: cluster)
        bootstrapServers = String(cString: rd_kafka_mock_cluster_bootstraps(cluster))
    }

    public func createTopic(_ name: String, partitions: Int = 1, replicationFactor: Int = 1) {
        _ = rd_kafka_mock_topic_create(cluster.pointer, name, Int32(partitions), Int32(replicationFactor))
    }

    public func setBrokerDown(_ id: Int) {
        _ = rd_kafka_mock_broker_set_down(cluster.pointer, Int32(id))
    }

    public func setBrokerUp(_ id: Int) {
        _ = rd_kafka_mock_broker_set_up(cluster.pointer, Int32(id))
    }

    /// The next `codes.count` Produce requests fail with these Kafka error codes.
    public func failProduceRequests(with codes: [Int32]) {
        let errors = codes.map { rd_kafka_resp_err_t(rawValue: $0) }
        // ApiKey 0 is Produce.
        rd_kafka_mock_push_request_errors_array(cluster.pointer, 0, errors.count, errors)
    }

    public func close() {
        rd_kafka_mock_cluster_destroy(cluster.pointer)
        rd_kafka_destroy(host.pointer)
    }
}
