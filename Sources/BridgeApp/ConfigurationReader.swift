import BridgeCore
import ConfigReading
import FileSink
import Foundation
import KafkaSink
import KubeInformer
import KubeModel
import NATSSink
import WebhookSink
import Yams

/// kubebridge's configuration as its YAML reads: the top-level sections here, each sink's own
/// keys beside that sink.
extension ConfigReader {
    mutating func configuration(_ root: Node) -> Configuration {
        var configuration = Configuration()
        var comparesStatesGiven: Node?
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
            configuration.selection = selection(resources, changedPaths: &configuration.changedPaths)
        }
        if let events = top["events"] {
            let fields = mapping(events, "events", allowed: ["typePrefix", "dropManagedFields", "revealSecrets", "changedPaths"])
            if let compare = bool(fields["changedPaths"], "events.changedPaths") {
                configuration.envelopes.changedPaths = compare
                comparesStatesGiven = fields["changedPaths"]
            }
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
        // Sent states are kept by the SQLite store only; compared by default where they are.
        if case .kubernetes = configuration.checkpointStore {
            if let given = comparesStatesGiven, configuration.envelopes.changedPaths {
                problem(given, "events.changedPaths", "the ConfigMap store (state.store: kubernetes) keeps no object states to compare with; changedpaths needs state.store: sqlite")
            }
            configuration.envelopes.changedPaths = false
            if configuration.changedPaths != nil || configuration.sinks.contains(where: { $0.pipeline.filter.changedPaths != nil }), problems.isEmpty {
                problems.append("\(location(root)): changedPaths filters need changedpaths, which the ConfigMap store (state.store: kubernetes) cannot give; use state.store: sqlite")
            }
        } else if comparesStatesGiven == nil {
            configuration.envelopes.changedPaths = true
        }
        configuration.envelopes.mergePatch = configuration.sinks.contains { $0.mergePatch }
        if configuration.envelopes.mergePatch, !configuration.envelopes.changedPaths, problems.isEmpty {
            problems.append("\(location(root)): diff: mergePatch compares each change with the state last sent of its object, which needs state.store: sqlite and events.changedPaths on")
        }
        if configuration.leaderElection != nil, configuration.checkpointStore == .sqlite, problems.isEmpty {
            problems.append("\(location(root)): leaderElection: replicas must share their checkpoint; set state.store: kubernetes")
        }
        if configuration.sinks.isEmpty, problems.isEmpty {
            problems.append("\(location(root)): sinks: at least one sink is needed (for example: - type: file, path: events.jsonl)")
        }
        return configuration
    }

    mutating func selection(_ node: Node, changedPaths: inout ChangedPathFilter?) -> ResourceSelection {
        var selection = ResourceSelection()
        let fields = mapping(node, "resources", allowed: ["include", "exclude", "namespaces", "labelSelector", "changeTypes", "specChangesOnly", "changedPaths"])
        if let paths = fields["changedPaths"] { changedPaths = changedPathFilter(paths, key: "resources.changedPaths") }
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
        let fields = mapping(node, key, allowed: ["include", "exclude", "namespaces", "changeTypes", "changedPaths"])
        var filter = eventFilter(fields, node: node, key: key)
        if let paths = fields["changedPaths"] { filter.changedPaths = changedPathFilter(paths, key: "\(key).changedPaths") }
        return filter
    }

    /// `changedPaths: {include: [/spec], exclude: [/status]}`: JSON Pointer prefixes.
    mutating func changedPathFilter(_ node: Node, key: String) -> ChangedPathFilter {
        let fields = mapping(node, key, allowed: ["include", "exclude"])
        var filter = ChangedPathFilter()
        for (field, target) in [("include", \ChangedPathFilter.include), ("exclude", \.exclude)] {
            guard let prefixes = strings(fields[field], "\(key).\(field)") else { continue }
            for prefix in prefixes where !prefix.hasPrefix("/") {
                problem(fields[field]!, "\(key).\(field)", "\"\(prefix)\" is not a JSON Pointer; write it from the object's root, such as /spec or /metadata/labels")
            }
            filter[keyPath: target] = prefixes
        }
        return filter
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

    /// The keys of each sink type's entry, besides those every sink has.
    static let sinkKeys = [
        "file": FileSink.Options.configurationKeys,
        "kafka": KafkaSinkOptions.configurationKeys,
        "nats": NATSSinkOptions.configurationKeys,
        "webhook": WebhookSinkOptions.configurationKeys,
    ]

    mutating func sink(_ node: Node, index: Int) -> Configuration.Sink? {
        let key = "sinks[\(index)]"
        let known = Self.sinkKeys.keys.sorted().joined(separator: ", ")
        let type = (node.mapping?["type"]).flatMap { $0.string }
        let fields = mapping(node, key, allowed: ["type", "name", "filter", "buffer", "batch", "retry", "diff"] + (type.flatMap { Self.sinkKeys[$0] } ?? []))
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
        let mergePatch = choice(fields["diff"], "\(key).diff", of: SinkDiff.self) == .mergePatch
        let kind: Configuration.SinkKind?
        switch type {
        case "file": kind = fileSink(fields, node: node, key: key).map { var options = $0; options.mergePatch = mergePatch; return .file(options) }
        case "kafka": kind = kafkaSink(fields, node: node, key: key).map { var options = $0; options.mergePatch = mergePatch; return .kafka(options) }
        case "nats": kind = natsSink(fields, node: node, key: key).map { var options = $0; options.mergePatch = mergePatch; return .nats(options) }
        case "webhook": kind = webhookSink(fields, node: node, key: key).map { var options = $0; options.mergePatch = mergePatch; return .webhook(options) }
        default:
            problem(fields["type"]!, "\(key).type", "unknown sink type \"\(type)\"; known sink types: \(known)")
            return nil
        }
        return kind.map { Configuration.Sink(name: name, kind: $0, pipeline: pipeline) }
    }

    /// A sink's `diff`: what it carries of each change beside `changedpaths`.
    enum SinkDiff: String, CaseIterable {
        case none
        case mergePatch
    }
}
