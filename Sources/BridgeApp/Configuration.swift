import BridgeCore
import Foundation
import KafkaSink
import KubeInformer
import KubeModel
import NATSSink
import WebhookSink
import Yams

/// kubebridge's configuration, read from YAML.
public struct Configuration: Sendable {
    public struct Cluster: Sendable {
        /// The cluster's identity in each event's `source`.
        public var name = "default"
        public var kubeconfig: String?
        public var context: String?
    }

    public struct FileSinkConfiguration: Sendable {
        public var path: String
        public var maxFileBytes = 256 * 1024 * 1024
        public var keepFiles = 5

        public init(path: String) {
            self.path = path
        }
    }

    public enum SinkKind: Sendable {
        case file(FileSinkConfiguration)
        case kafka(KafkaSinkOptions)
        case nats(NATSSinkOptions)
        case webhook(WebhookSinkOptions)

        /// The pipeline settings a sink of this kind starts from.
        public var defaultPipeline: Pipeline.Options {
            switch self {
            case .file, .nats: Pipeline.Options()
            case .kafka: KafkaSinkOptions.defaultPipeline
            case .webhook: WebhookSinkOptions.defaultPipeline
            }
        }
    }

    public struct Sink: Sendable {
        public var name: String
        public var kind: SinkKind
        public var pipeline: Pipeline.Options

        public init(name: String, kind: SinkKind, pipeline: Pipeline.Options? = nil) {
            self.name = name
            self.kind = kind
            self.pipeline = pipeline ?? kind.defaultPipeline
        }
    }

    /// Where checkpoints are kept.
    public enum CheckpointStoreKind: Sendable, Equatable {
        /// `checkpoints.sqlite` in the state directory: one replica.
        case sqlite
        /// ConfigMaps in a namespace, shared by replicas under leader election.
        case kubernetes(namespace: String, name: String)
    }

    public var cluster = Cluster()
    /// Where the checkpoints (`checkpoints.sqlite`) and dead letters (`dead-letters.jsonl`) live.
    public var stateDirectory = "./kubebridge-state"
    public var checkpointStore = CheckpointStoreKind.sqlite
    /// Set: replicas elect a leader on a Lease, and only the leader bridges.
    public var leaderElection: LeaderElectionOptions?
    public var selection = ResourceSelection()
    public var envelopes = EnvelopeOptions()
    public var sinks: [Sink] = []
    public var checkpointInterval: Duration = .seconds(1)
    /// How long a graceful shutdown may spend delivering what is buffered.
    public var drainTimeout: Duration = .seconds(30)
    public var logLevel = "info"
    /// `logfmt` (the default) or `json`.
    public var logFormat = LogFormat.logfmt
    /// Where `/metrics`, `/healthz`, `/readyz` and `/status` are served; nil: nowhere. Port 0
    /// picks a free one.
    public var operationsAddress: (host: String, port: Int)? = Configuration.defaultOperationsAddress
    /// A sink that confirms nothing for this long while events wait makes `/readyz` fail.
    public var stalledDeliveryAfter: Duration = .seconds(120)

    /// All interfaces in a pod, so that the kubelet and Prometheus reach it; localhost elsewhere.
    public static var defaultOperationsAddress: (host: String, port: Int) {
        (ProcessInfo.processInfo.environment["KUBERNETES_SERVICE_HOST"] == nil ? "127.0.0.1" : "0.0.0.0", 8080)
    }

    public init() {}

    /// Reads and validates a configuration file; every problem is reported with its line.
    /// `environment` is where `${NAME}` and the `...Env` keys are looked up.
    public static func load(path: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Configuration {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw ConfigurationError(problems: ["\(path): cannot be read"])
        }
        return try parse(text, file: path, environment: environment)
    }

    public static func parse(_ text: String, file: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Configuration {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else {
                throw ConfigurationError(problems: ["\(file): the file is empty; it needs at least a sinks section"])
            }
            root = node
        } catch let error as ConfigurationError {
            throw error
        } catch let error as YamlError {
            throw ConfigurationError(problems: ["\(file): not valid YAML: \(String(describing: error).split(separator: "\n").first ?? "")"])
        }
        var reader = ConfigReader(file: file, environment: environment)
        let configuration = reader.configuration(root)
        if !reader.problems.isEmpty { throw ConfigurationError(problems: reader.problems) }
        return configuration
    }
}

/// Every problem of a configuration, each with its file, line and key.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    public var problems: [String]
    public var description: String { problems.joined(separator: "\n") }
}

/// Walks the YAML tree, collecting problems rather than stopping at the first.
struct ConfigReader {
    let file: String
    let environment: [String: String]
    var problems: [String] = []

    func location(_ node: Node) -> String {
        "\(file):\(node.mark.map { "\($0.line)" } ?? "?")"
    }

    mutating func problem(_ node: Node, _ key: String, _ message: String) {
        problems.append("\(location(node)): \(key): \(message)")
    }

    /// The members of a mapping, reporting keys not `allowed` (typos are the usual mistake).
    mutating func mapping(_ node: Node, _ key: String, allowed: [String]?) -> [String: Node] {
        guard case .mapping(let mapping) = node else {
            problem(node, key, "expected a mapping")
            return [:]
        }
        var result: [String: Node] = [:]
        for (keyNode, value) in mapping {
            let name = keyNode.string ?? ""
            if let allowed, !allowed.contains(name) {
                problem(keyNode, key.isEmpty ? name : "\(key).\(name)",
                        "unknown key; expected one of \(allowed.joined(separator: ", "))")
                continue
            }
            result[name] = value
        }
        return result
    }

    mutating func string(_ node: Node?, _ key: String) -> String? {
        guard let node else { return nil }
        guard case .scalar(let scalar) = node else {
            problem(node, key, "expected a string")
            return nil
        }
        return scalar.string
    }

    mutating func int(_ node: Node?, _ key: String, minimum: Int = 0) -> Int? {
        guard let text = string(node, key), let node else { return nil }
        guard let value = Int(text.replacingOccurrences(of: "_", with: "")), value >= minimum else {
            problem(node, key, "expected a whole number of at least \(minimum), got \"\(text)\"")
            return nil
        }
        return value
    }

    mutating func bool(_ node: Node?, _ key: String) -> Bool? {
        guard let text = string(node, key), let node else { return nil }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            problem(node, key, "expected true or false, got \"\(text)\"")
            return nil
        }
    }

    /// `500ms`, `5s`, `2m`, `1h`.
    mutating func duration(_ node: Node?, _ key: String) -> Duration? {
        guard let text = string(node, key), let node else { return nil }
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        for (unit, scale) in units where text.hasSuffix(unit) {
            // At most a year: "1e999s" is a number, but no duration.
            if let value = Double(text.dropLast(unit.count)), value >= 0, value * scale <= 365 * 86400 {
                return .milliseconds(Int64(value * scale * 1000))
            }
        }
        problem(node, key, "expected a duration such as 500ms, 5s or 2m (at most a year), got \"\(text)\"")
        return nil
    }

    mutating func strings(_ node: Node?, _ key: String) -> [String]? {
        guard let node else { return nil }
        guard case .sequence(let sequence) = node else {
            problem(node, key, "expected a list")
            return nil
        }
        return sequence.enumerated().compactMap { string($0.element, "\(key)[\($0.offset)]") }
    }

    mutating func configuration(_ root: Node) -> Configuration {
        var configuration = Configuration()
        let top = mapping(root, "", allowed: ["cluster", "state", "resources", "events", "sinks", "checkpoint", "shutdown", "logging", "operations",
                                              "leaderElection"])
        if let cluster = top["cluster"] {
            let fields = mapping(cluster, "cluster", allowed: ["name", "kubeconfig", "context"])
            if let name = string(fields["name"], "cluster.name") { configuration.cluster.name = name }
            configuration.cluster.kubeconfig = string(fields["kubeconfig"], "cluster.kubeconfig")
            configuration.cluster.context = string(fields["context"], "cluster.context")
        }
        if let state = top["state"] {
            let fields = mapping(state, "state", allowed: ["directory", "store", "namespace", "name"])
            if let directory = string(fields["directory"], "state.directory") { configuration.stateDirectory = directory }
            switch string(fields["store"], "state.store") {
            case nil, "sqlite":
                break
            case "kubernetes":
                configuration.checkpointStore = .kubernetes(namespace: string(fields["namespace"], "state.namespace") ?? LeaderElectionOptions.defaultNamespace,
                                                            name: string(fields["name"], "state.name") ?? "kubebridge-checkpoint")
            case let other?:
                problem(fields["store"]!, "state.store", "expected sqlite or kubernetes, got \"\(other)\"")
            }
        }
        if let election = top["leaderElection"] {
            let fields = mapping(election, "leaderElection", allowed: ["enabled", "namespace", "name", "identity", "leaseDuration", "renewDeadline", "retryPeriod"])
            if bool(fields["enabled"], "leaderElection.enabled") ?? true {
                var options = LeaderElectionOptions(namespace: string(fields["namespace"], "leaderElection.namespace") ?? LeaderElectionOptions.defaultNamespace,
                                                    identity: string(fields["identity"], "leaderElection.identity") ?? LeaderElectionOptions.defaultIdentity)
                if let name = string(fields["name"], "leaderElection.name") { options.name = name }
                if let duration = duration(fields["leaseDuration"], "leaderElection.leaseDuration") { options.leaseDuration = duration }
                if let deadline = duration(fields["renewDeadline"], "leaderElection.renewDeadline") { options.renewDeadline = deadline }
                if let period = duration(fields["retryPeriod"], "leaderElection.retryPeriod") { options.retryPeriod = period }
                do {
                    try options.validate()
                    configuration.leaderElection = options
                } catch let error as ConfigurationError {
                    problems += error.problems.map { "\(location(election)): \($0)" }
                } catch {}
            }
        }
        if let resources = top["resources"] {
            configuration.selection = selection(resources)
        }
        if let events = top["events"] {
            let fields = mapping(events, "events", allowed: ["typePrefix", "dropManagedFields", "revealSecrets"])
            if let prefix = string(fields["typePrefix"], "events.typePrefix") { configuration.envelopes.typePrefix = prefix }
            if let drop = bool(fields["dropManagedFields"], "events.dropManagedFields") { configuration.envelopes.dropManagedFields = drop }
            if let reveal = strings(fields["revealSecrets"], "events.revealSecrets") {
                for (index, pattern) in reveal.enumerated() where pattern.split(separator: "/", omittingEmptySubsequences: false).count != 2 {
                    problem(fields["revealSecrets"]!, "events.revealSecrets[\(index)]", "expected namespace/name (with * as a wildcard), got \"\(pattern)\"")
                }
                configuration.envelopes.revealSecrets = reveal
            }
        }
        configuration.envelopes.cluster = configuration.cluster.name
        if let checkpoint = top["checkpoint"] {
            let fields = mapping(checkpoint, "checkpoint", allowed: ["interval"])
            if let interval = duration(fields["interval"], "checkpoint.interval") { configuration.checkpointInterval = interval }
        }
        if let shutdown = top["shutdown"] {
            let fields = mapping(shutdown, "shutdown", allowed: ["drainTimeout"])
            if let timeout = duration(fields["drainTimeout"], "shutdown.drainTimeout") { configuration.drainTimeout = timeout }
        }
        if let operations = top["operations"] {
            let fields = mapping(operations, "operations", allowed: ["address", "stalledDeliveryAfter"])
            if let limit = duration(fields["stalledDeliveryAfter"], "operations.stalledDeliveryAfter") { configuration.stalledDeliveryAfter = limit }
            if let address = string(fields["address"], "operations.address") {
                if address.isEmpty || address == "off" {
                    configuration.operationsAddress = nil
                } else if let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (0...65535).contains(port) {
                    let host = String(address[..<colon])
                    configuration.operationsAddress = (host.isEmpty ? "0.0.0.0" : host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")), port)
                } else {
                    problem(fields["address"]!, "operations.address", "expected host:port (:8080 for every interface, off for none), got \"\(address)\"")
                }
            }
        }
        if let logging = top["logging"] {
            let fields = mapping(logging, "logging", allowed: ["level", "format"])
            if let format = choice(fields["format"], "logging.format", of: LogFormat.self) { configuration.logFormat = format }
            if let level = string(fields["level"], "logging.level") {
                if ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(level) {
                    configuration.logLevel = level
                } else {
                    problem(fields["level"]!, "logging.level", "expected trace, debug, info, notice, warning, error or critical")
                }
            }
        }
        if let sinks = top["sinks"] {
            if case .sequence(let list) = sinks {
                configuration.sinks = list.enumerated().compactMap { sink($0.element, index: $0.offset) }
                let names = configuration.sinks.map(\.name)
                for name in Set(names) where names.filter({ $0 == name }).count > 1 {
                    problem(sinks, "sinks", "the name \"\(name)\" is used twice; sink names must be unique")
                }
            } else {
                problem(sinks, "sinks", "expected a list of sinks")
            }
        }
        if configuration.leaderElection != nil, configuration.checkpointStore == .sqlite, problems.isEmpty {
            problems.append("\(location(root)): leaderElection: replicas must share their checkpoint; set state.store: kubernetes")
        }
        if configuration.sinks.isEmpty, problems.isEmpty {
            problems.append("\(location(root)): sinks: at least one sink is needed (for example: - type: file, path: events.jsonl)")
        }
        return configuration
    }

    mutating func selection(_ node: Node) -> ResourceSelection {
        var selection = ResourceSelection()
        let fields = mapping(node, "resources", allowed: ["include", "exclude", "namespaces", "labelSelector", "changeTypes", "specChangesOnly"])
        let filter = eventFilter(fields, node: node, key: "resources")
        selection.include = filter.include
        selection.exclude = filter.exclude
        selection.includeNamespaces = filter.includeNamespaces
        selection.excludeNamespaces = filter.excludeNamespaces
        selection.changeTypes = filter.changeTypes
        selection.labelSelector = string(fields["labelSelector"], "resources.labelSelector")
        if let specOnly = bool(fields["specChangesOnly"], "resources.specChangesOnly") { selection.specChangesOnly = specOnly }
        return selection
    }

    /// A sink's `filter`: the same keys as `resources`, but for one sink.
    mutating func eventFilter(_ node: Node, key: String) -> EventFilter {
        eventFilter(mapping(node, key, allowed: ["include", "exclude", "namespaces", "changeTypes"]), node: node, key: key)
    }

    /// Resource patterns, namespaces and change types, under `key`.
    mutating func eventFilter(_ fields: [String: Node], node: Node, key: String) -> EventFilter {
        var filter = EventFilter()
        if let include = strings(fields["include"], "\(key).include") { filter.include = include }
        if let exclude = strings(fields["exclude"], "\(key).exclude") { filter.exclude = exclude }
        for (field, patterns) in [("include", filter.include), ("exclude", filter.exclude)] {
            for pattern in patterns where GVRPattern(pattern) == nil {
                problem(fields[field] ?? node, "\(key).\(field)", "\"\(pattern)\" is not group/version/resource (core for the core group, * as a wildcard)")
            }
        }
        if let namespaces = fields["namespaces"] {
            let namespaceFields = mapping(namespaces, "\(key).namespaces", allowed: ["include", "exclude"])
            if let include = strings(namespaceFields["include"], "\(key).namespaces.include") { filter.includeNamespaces = include }
            if let exclude = strings(namespaceFields["exclude"], "\(key).namespaces.exclude") { filter.excludeNamespaces = exclude }
        }
        if let types = strings(fields["changeTypes"], "\(key).changeTypes") {
            var set: Set<ChangeType> = []
            for type in types {
                if let changeType = ChangeType(rawValue: type) {
                    set.insert(changeType)
                } else {
                    problem(fields["changeTypes"]!, "\(key).changeTypes", "unknown change type \"\(type)\"; expected added, modified, deleted or synced")
                }
            }
            filter.changeTypes = set
        }
        return filter
    }

    static let sinkKeys = [
        "file": ["path", "maxFileBytes", "keepFiles"],
        "kafka": ["brokers", "topic", "mode", "compression", "properties"],
        "nats": ["servers", "subject", "mode", "stream", "createStream", "duplicateWindow", "replicas", "retention", "token", "user", "password",
                 "credentialsFile", "nkeySeedFile", "caFile"],
        "webhook": ["url", "mode", "batchMaxEvents", "batchMaxBytes", "concurrency", "timeout", "retryWindow", "maxRetryAfter", "headers",
                    "bearerTokenFile", "signingSecretFile", "signingSecretEnv", "caFile"],
    ]

    mutating func sink(_ node: Node, index: Int) -> Configuration.Sink? {
        let key = "sinks[\(index)]"
        let known = Self.sinkKeys.keys.sorted().joined(separator: ", ")
        let type = (node.mapping?["type"]).flatMap { $0.string }
        let fields = mapping(node, key, allowed: ["type", "name", "filter", "buffer", "batch", "retry"] + (type.flatMap { Self.sinkKeys[$0] } ?? []))
        guard let type else {
            problem(node, "\(key).type", "missing; known sink types: \(known)")
            return nil
        }
        var pipeline = switch type {
        case "kafka": KafkaSinkOptions.defaultPipeline
        case "webhook": WebhookSinkOptions.defaultPipeline
        default: Pipeline.Options()
        }
        if let filter = fields["filter"] {
            pipeline.filter = eventFilter(filter, key: "\(key).filter")
        }
        if let buffer = fields["buffer"] {
            let bufferFields = mapping(buffer, "\(key).buffer", allowed: ["maxEvents", "maxBytes"])
            if let events = int(bufferFields["maxEvents"], "\(key).buffer.maxEvents", minimum: 1) { pipeline.maxBufferedEvents = events }
            if let bytes = int(bufferFields["maxBytes"], "\(key).buffer.maxBytes", minimum: 1024) { pipeline.maxBufferedBytes = bytes }
        }
        if let batch = fields["batch"] {
            let batchFields = mapping(batch, "\(key).batch", allowed: ["size", "bytes", "linger", "inFlight"])
            if let size = int(batchFields["size"], "\(key).batch.size", minimum: 1) { pipeline.batchSize = size }
            if let bytes = int(batchFields["bytes"], "\(key).batch.bytes", minimum: 1024) { pipeline.batchBytes = bytes }
            if let linger = duration(batchFields["linger"], "\(key).batch.linger") { pipeline.linger = linger }
            if let inFlight = int(batchFields["inFlight"], "\(key).batch.inFlight", minimum: 1) { pipeline.batchesInFlight = inFlight }
        }
        if let retry = fields["retry"] {
            let retryFields = mapping(retry, "\(key).retry", allowed: ["initial", "maximum"])
            if let initial = duration(retryFields["initial"], "\(key).retry.initial") { pipeline.retry.initial = initial }
            if let maximum = duration(retryFields["maximum"], "\(key).retry.maximum") { pipeline.retry.maximum = maximum }
        }
        let name = string(fields["name"], "\(key).name") ?? "\(type)-\(index)"
        switch type {
        case "file":
            guard let path = string(fields["path"], "\(key).path"), !path.isEmpty else {
                problem(node, "\(key).path", "a file sink needs a path")
                return nil
            }
            var file = Configuration.FileSinkConfiguration(path: path)
            if let bytes = int(fields["maxFileBytes"], "\(key).maxFileBytes", minimum: 4096) { file.maxFileBytes = bytes }
            if let keep = int(fields["keepFiles"], "\(key).keepFiles", minimum: 1) { file.keepFiles = keep }
            return Configuration.Sink(name: name, kind: .file(file), pipeline: pipeline)
        case "kafka":
            return kafkaSink(fields, node: node, key: key).map { Configuration.Sink(name: name, kind: .kafka($0), pipeline: pipeline) }
        case "nats":
            return natsSink(fields, node: node, key: key).map { Configuration.Sink(name: name, kind: .nats($0), pipeline: pipeline) }
        case "webhook":
            return webhookSink(fields, node: node, key: key).map { Configuration.Sink(name: name, kind: .webhook($0), pipeline: pipeline) }
        default:
            problem(fields["type"]!, "\(key).type", "unknown sink type \"\(type)\"; known sink types: \(known)")
            return nil
        }
    }

    /// One of an enumeration's values, by its raw value.
    mutating func choice<Value: RawRepresentable & CaseIterable>(_ node: Node?, _ key: String, of type: Value.Type) -> Value? where Value.RawValue == String {
        guard let node, let text = string(node, key) else { return nil }
        guard let value = Value(rawValue: text) else {
            let names = Value.allCases.map(\.rawValue)
            problem(node, key, "expected \(names.dropLast().joined(separator: ", ")) or \(names.last ?? ""), got \"\(text)\"")
            return nil
        }
        return value
    }

    /// A list, or one comma-separated string.
    mutating func addresses(_ node: Node?, _ key: String) -> [String] {
        if let node, case .scalar = node {
            return (string(node, key) ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        }
        return strings(node, key) ?? []
    }

    mutating func natsSink(_ fields: [String: Node], node: Node, key: String) -> NATSSinkOptions? {
        let servers = addresses(fields["servers"], "\(key).servers")
        guard !servers.isEmpty else {
            problem(node, "\(key).servers", "a NATS sink needs at least one server (nats://host:port)")
            return nil
        }
        var options = NATSSinkOptions(servers: servers)
        if let subject = string(fields["subject"], "\(key).subject") { options.subject = subject }
        if let mode = choice(fields["mode"], "\(key).mode", of: NATSSinkOptions.Mode.self) { options.mode = mode }
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

    mutating func webhookSink(_ fields: [String: Node], node: Node, key: String) -> WebhookSinkOptions? {
        guard let url = string(fields["url"], "\(key).url"), !url.isEmpty else {
            problem(node, "\(key).url", "a webhook sink needs a url (http:// or https://)")
            return nil
        }
        var options = WebhookSinkOptions(url: environmentExpanded(url, node: fields["url"]!, key: "\(key).url"))
        if let mode = choice(fields["mode"], "\(key).mode", of: WebhookSinkOptions.Mode.self) { options.mode = mode }
        if let events = int(fields["batchMaxEvents"], "\(key).batchMaxEvents", minimum: 1) { options.batchMaxEvents = events }
        if let bytes = int(fields["batchMaxBytes"], "\(key).batchMaxBytes", minimum: 1024) { options.batchMaxBytes = bytes }
        if let concurrency = int(fields["concurrency"], "\(key).concurrency", minimum: 1) { options.concurrency = concurrency }
        if let timeout = duration(fields["timeout"], "\(key).timeout") { options.timeout = timeout }
        if let window = duration(fields["retryWindow"], "\(key).retryWindow") { options.retryWindow = window }
        if let limit = duration(fields["maxRetryAfter"], "\(key).maxRetryAfter") { options.maxRetryAfter = limit }
        if let headers = fields["headers"] {
            for (name, value) in mapping(headers, "\(key).headers", allowed: nil).sorted(by: { $0.key < $1.key }) {
                guard let text = string(value, "\(key).headers.\(name)") else { continue }
                options.headers.append((name, environmentExpanded(text, node: value, key: "\(key).headers.\(name)")))
            }
        }
        options.bearerTokenFile = string(fields["bearerTokenFile"], "\(key).bearerTokenFile")
        options.caFile = string(fields["caFile"], "\(key).caFile")
        switch (fields["signingSecretFile"], fields["signingSecretEnv"]) {
        case (.some(let fileNode), .some):
            problem(fileNode, "\(key).signingSecretFile", "give signingSecretFile or signingSecretEnv, not both")
        case (.some(let fileNode), nil):
            if let path = string(fileNode, "\(key).signingSecretFile") {
                if let data = FileManager.default.contents(atPath: path) {
                    options.signingSecret = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                } else {
                    problem(fileNode, "\(key).signingSecretFile", "\(path) cannot be read")
                }
            }
        case (nil, .some(let envNode)):
            if let name = string(envNode, "\(key).signingSecretEnv") {
                if let value = environment[name], !value.isEmpty {
                    options.signingSecret = value
                } else {
                    problem(envNode, "\(key).signingSecretEnv", "the environment variable \(name) is not set")
                }
            }
        case (nil, nil):
            break
        }
        return validated(options, node: node, key: key) { try $0.validate() }
    }

    mutating func kafkaSink(_ fields: [String: Node], node: Node, key: String) -> KafkaSinkOptions? {
        let brokers = addresses(fields["brokers"], "\(key).brokers")
        guard !brokers.isEmpty else {
            problem(node, "\(key).brokers", "a Kafka sink needs at least one broker (host:port)")
            return nil
        }
        var options = KafkaSinkOptions(brokers: brokers)
        if let topic = string(fields["topic"], "\(key).topic") { options.topic = topic }
        if let mode = choice(fields["mode"], "\(key).mode", of: KafkaSinkOptions.Mode.self) { options.mode = mode }
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

    /// The options when `validate` accepts them; otherwise nil, and the problem is reported at `node`.
    mutating func validated<Options>(_ options: Options, node: Node, key: String, _ validate: (Options) throws -> Void) -> Options? {
        do {
            try validate(options)
        } catch {
            problem(node, key, "\(error)")
            return nil
        }
        return options
    }

    /// `${NAME}` in a value is replaced by the environment variable, so that credentials can come
    /// from a Secret rather than the file.
    mutating func environmentExpanded(_ text: String, node: Node, key: String) -> String {
        var result = ""
        var rest = Substring(text)
        while let start = rest.range(of: "${") {
            result += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                problem(node, key, "\"${\" without a closing \"}\"")
                return text
            }
            let name = String(rest[start.upperBound..<end])
            if let value = environment[name] {
                result += value
            } else {
                problem(node, key, "the environment variable \(name) is not set")
            }
            rest = rest[rest.index(after: end)...]
        }
        return result + rest
    }
}
