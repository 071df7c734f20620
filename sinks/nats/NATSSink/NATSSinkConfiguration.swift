import BridgeCore
import ConfigReading
import Yams

extension NATSSinkOptions {
    /// The keys of a `type: nats` entry of `sinks`, besides those every sink has.
    public static let configurationKeys = ["servers", "subject", "mode", "stream", "createStream", "duplicateWindow", "replicas", "retention", "token",
                                           "user", "password", "credentialsFile", "nkeySeedFile", "caFile"]
}

extension ConfigReader {
    /// A `type: nats` entry of `sinks` (its `fields`, at `key`): nil when it has a problem, reported.
    public mutating func natsSink(_ fields: [String: Node], node: Node, key: String) -> NATSSinkOptions? {
        let servers = addresses(fields["servers"], "\(key).servers")
        guard !servers.isEmpty else {
            problem(node, "\(key).servers", "a NATS sink needs at least one server (nats://host:port)")
            return nil
        }
        var options = NATSSinkOptions(servers: servers)
        if let subject = string(fields["subject"], "\(key).subject") { options.subject = subject }
        if let mode = choice(fields["mode"], "\(key).mode", of: ContentMode.self, among: NATSSinkOptions.modes) { options.mode = mode }
        if let stream = string(fields["stream"], "\(key).stream") { options.stream = stream }
        if let create = bool(fields["createStream"], "\(key).createStream") { options.createStream = create }
        if let window = duration(fields["duplicateWindow"], "\(key).duplicateWindow") { options.duplicateWindow = window }
        if let replicas = int(fields["replicas"], "\(key).replicas", minimum: 1) { options.replicas = replicas }
        if let retention = choice(fields["retention"], "\(key).retention", of: NATSSinkOptions.Retention.self) { options.retention = retention }
        for (field, path) in [("token", \NATSSinkOptions.token), ("user", \.user), ("password", \.password),
                              ("credentialsFile", \.credentialsFile), ("nkeySeedFile", \.nkeySeedFile), ("caFile", \.caFile)] {
            guard let value = fields[field], let text = string(value, "\(key).\(field)") else { continue }
            options[keyPath: path] = environmentExpanded(text, node: value, key: "\(key).\(field)")
        }
        return validated(options, node: node, key: key) { try $0.validate() }
    }
}
