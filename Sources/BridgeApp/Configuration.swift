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

/// kubebridge's configuration, read from YAML.
public struct Configuration: Sendable {
    public struct Cluster: Sendable {
        /// The cluster's identity in each event's `source`.
        public var name = "default"
        public var kubeconfig: String?
        public var context: String?
    }

    public enum SinkKind: Sendable {
        case file(FileSink.Options)
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

        /// `diff: mergePatch`: its events carry the merge patch from the state sent before.
        public var mergePatch: Bool {
            switch kind {
            case .file(let options): options.mergePatch
            case .kafka(let options): options.mergePatch
            case .nats(let options): options.mergePatch
            case .webhook(let options): options.mergePatch
            }
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
    /// `resources.changedPaths`: a change whose paths it refuses goes to no sink.
    public var changedPaths: ChangedPathFilter?
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
