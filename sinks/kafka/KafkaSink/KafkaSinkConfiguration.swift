import BridgeCore
import ConfigReading
import Yams

extension KafkaSinkOptions {
    /// The keys of a `type: kafka` entry of `sinks`, besides those every sink has.
    public static let configurationKeys = ["brokers", "topic", "mode", "compression", "properties"]
}

extension ConfigReader {
    /// A `type: kafka` entry of `sinks` (its `fields`, at `key`): nil when it has a problem, reported.
    public mutating func kafkaSink(_ fields: [String: Node], node: Node, key: String) -> KafkaSinkOptions? {
        let brokers = addresses(fields["brokers"], "\(key).brokers")
        guard !brokers.isEmpty else {
            problem(node, "\(key).brokers", "a Kafka sink needs at least one broker (host:port)")
            return nil
        }
        var options = KafkaSinkOptions(brokers: brokers)
        if let topic = string(fields["topic"], "\(key).topic") { options.topic = topic }
        if let mode = choice(fields["mode"], "\(key).mode", of: ContentMode.self, among: KafkaSinkOptions.modes) { options.mode = mode }
        if let compression = string(fields["compression"], "\(key).compression") { options.compression = compression }
        if let properties = fields["properties"] {
            for (name, value) in mapping(properties, "\(key).properties", allowed: nil) {
                guard let text = string(value, "\(key).properties.\(name)") else { continue }
                options.properties[name] = environmentExpanded(text, node: value, key: "\(key).properties.\(name)")
            }
        }
        return validated(options, node: node, key: key) { options in
            try options.validate()
            try options.validateProperties()
        }
    }
}
