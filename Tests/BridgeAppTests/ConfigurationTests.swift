import BridgeApp
import BridgeCore
import Foundation
import KubeModel
import Testing
import TestSupport
import WebhookSink

@Suite("Configuration")
struct ConfigurationTests {
    @Test("a full configuration is read as written")
    func full() throws {
        let configuration = try Configuration.parse("""
            cluster:
              name: prod-eu
              kubeconfig: /etc/kube/config
              context: admin
            state:
              directory: /var/lib/kubebridge
            resources:
              include: ["*/*/*", core/v1/events]
              exclude: ["*.example.com/*/*"]
              namespaces:
                include: [team-*]
                exclude: [team-secret]
              labelSelector: app=web
              changeTypes: [added, deleted]
              specChangesOnly: true
            events:
              typePrefix: com.example.k8s
              dropManagedFields: false
              revealSecrets: [kube-system/bootstrap-*]
            checkpoint:
              interval: 500ms
            shutdown:
              drainTimeout: 1m
            logging:
              level: debug
            sinks:
              - type: file
                name: audit
                path: /var/log/kubebridge/{resource}.jsonl
                maxFileBytes: 1_000_000
                keepFiles: 3
                buffer: {maxEvents: 100, maxBytes: 1048576}
                batch: {size: 50, bytes: 65536, linger: 20ms, inFlight: 2}
                retry: {initial: 100ms, maximum: 10s}
            """, file: "bridge.yaml")
        #expect(configuration.cluster.name == "prod-eu")
        #expect(configuration.envelopes.cluster == "prod-eu")
        #expect(configuration.cluster.context == "admin")
        #expect(configuration.stateDirectory == "/var/lib/kubebridge")
        #expect(configuration.selection.include == ["*/*/*", "core/v1/events"])
        #expect(configuration.selection.includeNamespaces == ["team-*"])
        #expect(configuration.selection.changeTypes == [.added, .deleted])
        #expect(configuration.selection.specChangesOnly)
        #expect(configuration.envelopes.typePrefix == "com.example.k8s")
        #expect(!configuration.envelopes.dropManagedFields)
        #expect(configuration.checkpointInterval == .milliseconds(500))
        #expect(configuration.drainTimeout == .seconds(60))
        #expect(configuration.logLevel == "debug")
        let sink = try #require(configuration.sinks.first)
        #expect(sink.name == "audit")
        #expect(sink.pipeline.maxBufferedEvents == 100)
        #expect(sink.pipeline.batchSize == 50)
        #expect(sink.pipeline.linger == .milliseconds(20))
        #expect(sink.pipeline.batchesInFlight == 2)
        #expect(sink.pipeline.retry.maximum == .seconds(10))
        guard case .file(let file) = sink.kind else { Issue.record("expected a file sink"); return }
        #expect(file.maxFileBytes == 1_000_000)
        #expect(file.keepFiles == 3)
    }

    @Test("changed paths: compared by default with SQLite, filters in resources and per sink, off with the ConfigMap store")
    func changedPaths() throws {
        let configuration = try Configuration.parse("""
            resources:
              changedPaths: {exclude: [/status]}
            sinks:
              - type: file
                path: x
                filter:
                  changedPaths: {include: [/spec, /metadata/labels/]}
            """, file: "bridge.yaml")
        #expect(configuration.envelopes.changedPaths)
        #expect(configuration.changedPaths == ChangedPathFilter(exclude: ["/status"]))
        #expect(configuration.sinks.first?.pipeline.filter.changedPaths == ChangedPathFilter(include: ["/spec", "/metadata/labels/"]))
        #expect(!configuration.envelopes.mergePatch && configuration.sinks.first?.mergePatch == false)
        let patched = try Configuration.parse("sinks:\n  - {type: file, path: x}\n  - {type: nats, servers: [nats://n:4222], diff: mergePatch}\n", file: "bridge.yaml")
        #expect(patched.envelopes.mergePatch && patched.sinks.map(\.mergePatch) == [false, true])
        let off = try Configuration.parse("events: {changedPaths: false}\nsinks:\n  - {type: file, path: x}\n", file: "bridge.yaml")
        #expect(!off.envelopes.changedPaths)
        let configMaps = try Configuration.parse("state: {store: kubernetes}\nsinks:\n  - {type: file, path: x}\n", file: "bridge.yaml")
        #expect(!configMaps.envelopes.changedPaths, "the ConfigMap store keeps no states to compare with")
    }

    @Test("a filter's changed paths pass a change when one path is under an include and none of it under an exclude", arguments: [
        (["/spec/replicas"], ["/spec"], [String](), true),
        (["/status/replicas"], ["/spec"], [], false),
        (["/specs"], ["/spec"], [], false),
        (["/spec"], ["/spec/replicas"], [], true),  // a parent standing for children too many to list
        (["/status/replicas", "/metadata/labels/app"], [], ["/status"], true),
        (["/status/replicas"], [], ["/status"], false),
        (["/spec/paused"], ["/spec"], ["/spec/paused"], false),
        ([""], ["/spec"], ["/status"], true),  // the whole object, its paths too many
    ])
    func pathFilter(paths: [String], include: [String], exclude: [String], passes: Bool) {
        #expect(ChangedPathFilter(include: include, exclude: exclude).accepts(paths) == passes)
        var filter = EventFilter()
        filter.changedPaths = ChangedPathFilter(include: include, exclude: exclude)
        let resource = GroupVersionResource("apps/v1/deployments")!
        #expect(filter.accepts(resource: resource, namespace: "a", type: .modified, changedPaths: paths) == passes)
        #expect(filter.accepts(resource: resource, namespace: "a", type: .modified, changedPaths: nil), "a change with nothing to compare with passes")
    }

    @Test("a Kafka sink: brokers as a list or a comma-separated string, librdkafka properties with ${ENV} from the environment")
    func kafka() throws {
        let environment = ["KUBEBRIDGE_TEST_KAFKA_PASSWORD": "s3cret"]
        let configuration = try Configuration.parse("""
            sinks:
              - type: kafka
                brokers: [kafka-0:9092, kafka-1:9092]
                topic: k8s.{namespace}.{resource}
                mode: structured
                compression: zstd
                properties:
                  security.protocol: SASL_SSL
                  sasl.mechanism: SCRAM-SHA-512
                  sasl.username: kubebridge
                  sasl.password: pre-${KUBEBRIDGE_TEST_KAFKA_PASSWORD}
              - type: kafka
                name: second
                brokers: "a:9092, b:9092"
            """, file: "bridge.yaml", environment: environment)
        guard case .kafka(let first) = configuration.sinks[0].kind, case .kafka(let second) = configuration.sinks[1].kind else {
            Issue.record("expected two Kafka sinks")
            return
        }
        #expect(configuration.sinks.map(\.name) == ["kafka-0", "second"])
        #expect(first.brokers == ["kafka-0:9092", "kafka-1:9092"])
        #expect(first.topic == "k8s.{namespace}.{resource}")
        #expect(first.mode == .structured)
        #expect(first.producerProperties["compression.codec"] == "zstd")
        #expect(first.producerProperties["sasl.password"] == "pre-s3cret")
        #expect(first.producerProperties["acks"] == "all")
        #expect(second.brokers == ["a:9092", "b:9092"])
        #expect(second.producerProperties["bootstrap.servers"] == "a:9092,b:9092")
    }

    @Test("a NATS sink: servers, subject template, stream settings, credentials with ${ENV}")
    func nats() throws {
        let environment = ["KUBEBRIDGE_TEST_NATS_TOKEN": "t0ken"]
        let configuration = try Configuration.parse("""
            sinks:
              - type: nats
                servers: "nats://a:4222, nats://b:4222"
                subject: k8s.{resource}.{namespace}.{name}
                mode: structured
                stream: EVENTS
                createStream: true
                duplicateWindow: 10m
                replicas: 3
                retention: interest
                token: ${KUBEBRIDGE_TEST_NATS_TOKEN}
                nkeySeedFile: /etc/nats/kubebridge.nk
            """, file: "bridge.yaml", environment: environment)
        guard case .nats(let options) = configuration.sinks[0].kind else {
            Issue.record("expected a NATS sink")
            return
        }
        #expect(options.servers == ["nats://a:4222", "nats://b:4222"])
        #expect(options.subject == "k8s.{resource}.{namespace}.{name}")
        #expect(options.streamSubjects == ["k8s.*.*.*"])
        #expect(options.mode == .structured)
        #expect(options.stream == "EVENTS")
        #expect(options.createStream)
        #expect(options.duplicateWindow == .seconds(600))
        #expect(options.replicas == 3)
        #expect(options.retention == .interest)
        #expect(options.token == "t0ken")
        #expect(options.nkeySeedFile == "/etc/nats/kubebridge.nk")
    }

    @Test("webhook sinks: each with its own filter, mode and limits; the signing secret from a file or the environment, headers with ${ENV}")
    func webhooks() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let secretFile = directory.appendingPathComponent("secret").path
        try "whsec_c2VjcmV0LW9uZQ==\n".write(toFile: secretFile, atomically: true, encoding: .utf8)
        let environment = ["KUBEBRIDGE_TEST_WEBHOOK_SECRET": "whsec_c2VjcmV0LXR3bw==", "KUBEBRIDGE_TEST_WEBHOOK_KEY": "k3y"]
        let configuration = try Configuration.parse("""
            sinks:
              - type: webhook
                name: audit
                url: https://audit.example.com/k8s
                mode: batch
                batchMaxEvents: 50
                batchMaxBytes: 65536
                concurrency: 4
                timeout: 3s
                retryWindow: 1m
                signingSecretFile: \(secretFile)
                headers:
                  X-Api-Key: ${KUBEBRIDGE_TEST_WEBHOOK_KEY}
                filter:
                  include: [apps/v1/deployments]
                  namespaces: {exclude: [kube-*]}
                  changeTypes: [added, deleted]
              - type: webhook
                name: fn
                url: http://fn.default.svc/
                signingSecretEnv: KUBEBRIDGE_TEST_WEBHOOK_SECRET
                bearerTokenFile: \(secretFile)
            """, file: "bridge.yaml", environment: environment)
        guard case .webhook(let audit) = configuration.sinks[0].kind, case .webhook(let fn) = configuration.sinks[1].kind else {
            Issue.record("expected two webhook sinks")
            return
        }
        #expect(audit.url == "https://audit.example.com/k8s")
        #expect(audit.mode == .batch && audit.batchMaxEvents == 50 && audit.batchMaxBytes == 65536 && audit.concurrency == 4)
        #expect(audit.timeout == .seconds(3) && audit.retryWindow == .seconds(60))
        #expect(audit.signingSecret == "whsec_c2VjcmV0LW9uZQ==")
        #expect(audit.headers.map(\.name) == ["X-Api-Key"] && audit.headers.map(\.value) == ["k3y"])
        let filter = configuration.sinks[0].pipeline.filter
        #expect(filter.include == ["apps/v1/deployments"] && filter.excludeNamespaces == ["kube-*"] && filter.changeTypes == [.added, .deleted])
        #expect(configuration.sinks[0].pipeline.batchSize == WebhookSinkOptions.defaultPipeline.batchSize)
        #expect(fn.mode == .binary && fn.signingSecret == "whsec_c2VjcmV0LXR3bw==" && fn.bearerTokenFile == secretFile)
        #expect(configuration.sinks[1].pipeline.filter.acceptsAll)
    }

    @Test("operations address and log format", arguments: [
        ("127.0.0.1:9090", "127.0.0.1", 9090), (":8080", "0.0.0.0", 8080), ("[::1]:8080", "::1", 8080), ("off", nil, nil),
    ] as [(String, String?, Int?)])
    func operations(address: String, host: String?, port: Int?) throws {
        let configuration = try Configuration.parse("operations:\n  address: \"\(address)\"\nlogging:\n  format: json\nsinks:\n  - {type: file, path: x}\n",
                                                    file: "bridge.yaml")
        #expect(configuration.operationsAddress?.host == host && configuration.operationsAddress?.port == port)
        #expect(configuration.logFormat == .json)
        #expect(try Configuration.parse("sinks:\n  - {type: file, path: x}\n", file: "b.yaml").operationsAddress?.port == 8080)
    }

    @Test("leader election and checkpoints in ConfigMaps")
    func election() throws {
        let configuration = try Configuration.parse("""
            state: {store: kubernetes, namespace: ops, name: bridge-state}
            leaderElection: {namespace: ops, name: bridge, identity: pod-a, leaseDuration: 20s, renewDeadline: 12s, retryPeriod: 3s}
            sinks:
              - {type: file, path: x}
            """, file: "bridge.yaml")
        #expect(configuration.checkpointStore == .kubernetes(namespace: "ops", name: "bridge-state"))
        let election = try #require(configuration.leaderElection)
        #expect(election.namespace == "ops" && election.name == "bridge" && election.identity == "pod-a")
        #expect(election.leaseDuration == .seconds(20) && election.renewDeadline == .seconds(12) && election.retryPeriod == .seconds(3))
        let plan = ClusterRolePlan(configuration: configuration)
        #expect(plan.namespaced?.namespace == "ops")
        #expect(plan.yaml().contains("kind: Role\nmetadata:\n  name: kubebridge\n  namespace: ops"))
        #expect(try Configuration.parse("sinks:\n  - {type: file, path: x}\n", file: "b.yaml").leaderElection == nil)
    }

    @Test("every problem is reported, each with its line and key", arguments: [
        ("sinks:\n  - type: nats\n    stream: S\n", ["bridge.yaml:2: sinks[0].servers: a NATS sink needs at least one server"]),
        ("sinks:\n  - type: nats\n    servers: [nats://n:4222]\n    subject: kube.{name}-x\n", ["is not a placeholder on its own"]),
        ("sinks:\n  - type: nats\n    servers: [nats://n:4222]\n    topic: x\n", ["bridge.yaml:4: sinks[0].topic: unknown key"]),
        ("sinks:\n  - type: nats\n    servers: [nats://n:4222]\n    retention: forever\n", ["bridge.yaml:4: sinks[0].retention: expected limits, interest or workqueue"]),
        ("sinks:\n  - type: file\n    path: x\nstat:\n  directory: y\n", ["bridge.yaml:4: stat: unknown key"]),
        ("sinks:\n  - type: kafak\n", ["bridge.yaml:2: sinks[0].type: unknown sink type \"kafak\""]),
        ("sinks:\n  - type: file\n", ["bridge.yaml:2: sinks[0].path: a file sink needs a path"]),
        ("checkpoint:\n  interval: soon\nsinks:\n  - {type: file, path: x}\n", ["bridge.yaml:2: checkpoint.interval: expected a duration"]),
        ("resources:\n  include: [apps/deployments]\nsinks:\n  - {type: file, path: x}\n", ["resources.include: \"apps/deployments\" is not group/version/resource"]),
        ("resources:\n  changeTypes: [added, created]\nsinks:\n  - {type: file, path: x}\n", ["unknown change type \"created\""]),
        ("sinks:\n  - {type: file, path: x, keepFiles: zero}\n  - {type: file, name: file-0, path: y}\n",
         ["sinks[0].keepFiles: expected a whole number", "the name \"file-0\" is used twice"]),
        ("cluster:\n  name: x\n", ["sinks: at least one sink is needed"]),
        ("sinks: [\n", ["not valid YAML"]),
        ("", ["the file is empty"]),
        ("sinks:\n  - type: kafka\n    topic: x\n", ["bridge.yaml:2: sinks[0].brokers: a Kafka sink needs at least one broker"]),
        ("sinks:\n  - type: kafka\n    brokers: [k:9092]\n    path: x\n", ["bridge.yaml:4: sinks[0].path: unknown key; expected one of type, name, filter, buffer, batch, retry, diff, brokers"]),
        ("sinks:\n  - type: kafka\n    brokers: [k:9092]\n    topic: kube/{resource}\n", ["which Kafka does not accept"]),
        ("sinks:\n  - type: kafka\n    brokers: [k:9092]\n    mode: binar\n", ["bridge.yaml:4: sinks[0].mode: expected binary or structured"]),
        ("sinks:\n  - type: nats\n    servers: [nats://n:4222]\n    mode: batch\n", ["bridge.yaml:4: sinks[0].mode: expected binary or structured, got \"batch\""]),
        ("resources:\n  changedPaths: {include: [spec]}\nsinks:\n  - {type: file, path: x}\n", ["bridge.yaml:2: resources.changedPaths.include: \"spec\" is not a JSON Pointer"]),
        ("state: {store: kubernetes}\nleaderElection: {namespace: ops}\nevents: {changedPaths: true}\nsinks:\n  - {type: file, path: x}\n",
         ["bridge.yaml:3: events.changedPaths: the ConfigMap store (state.store: kubernetes) keeps no object states"]),
        ("sinks:\n  - {type: file, path: x, diff: json}\n", ["bridge.yaml:2: sinks[0].diff: expected none or mergePatch, got \"json\""]),
        ("events: {changedPaths: false}\nsinks:\n  - {type: file, path: x, diff: mergePatch}\n",
         ["diff: mergePatch compares each change with the state last sent of its object, which needs state.store: sqlite and events.changedPaths on"]),
        ("state: {store: kubernetes}\nsinks:\n  - {type: file, path: x, filter: {changedPaths: {include: [/spec]}}}\n",
         ["changedPaths filters need changedpaths, which the ConfigMap store (state.store: kubernetes) cannot give"]),
        ("sinks:\n  - type: kafka\n    brokers: [k:9092]\n    properties:\n      acks: sometimes\n", ["sinks[0]: Kafka property acks=sometimes: Invalid value"]),
        ("sinks:\n  - type: kafka\n    brokers: [k:9092]\n    properties:\n      sasl.password: ${KUBEBRIDGE_TEST_UNSET}\n",
         ["bridge.yaml:5: sinks[0].properties.sasl.password: the environment variable KUBEBRIDGE_TEST_UNSET is not set"]),
        ("sinks:\n  - type: webhook\n    mode: binary\n", ["bridge.yaml:2: sinks[0].url: a webhook sink needs a url"]),
        ("operations:\n  address: localhost\nsinks:\n  - {type: file, path: x}\n", ["bridge.yaml:2: operations.address: expected host:port"]),
        ("logging:\n  format: text\nsinks:\n  - {type: file, path: x}\n", ["bridge.yaml:2: logging.format: expected logfmt or json"]),
        ("leaderElection: {namespace: ops}\nsinks:\n  - {type: file, path: x}\n", ["leaderElection: replicas must share their checkpoint; set state.store: kubernetes"]),
        ("state: {store: kubernetes}\nleaderElection: {leaseDuration: 5s, renewDeadline: 10s}\nsinks:\n  - {type: file, path: x}\n",
         ["leaseDuration must be longer than renewDeadline"]),
        ("state: {store: etcd}\nsinks:\n  - {type: file, path: x}\n", ["state.store: expected sqlite or kubernetes"]),
        // Found by FuzzTests: a number too large for a duration crashed the reader.
        ("checkpoint: {interval: 1e999s}\nsinks:\n  - {type: file, path: x}\n", ["checkpoint.interval: expected a duration such as 500ms, 5s or 2m (at most a year)"]),
        ("sinks:\n  - type: webhook\n    url: localhost:8080\n", ["sinks[0]: url \"localhost:8080\" is not an http:// or https:// URL"]),
        ("sinks:\n  - type: webhook\n    url: http://h/\n    mode: batched\n", ["sinks[0].mode: expected binary, structured or batch"]),
        ("sinks:\n  - type: webhook\n    url: http://h/\n    signingSecretEnv: KUBEBRIDGE_TEST_UNSET\n",
         ["bridge.yaml:4: sinks[0].signingSecretEnv: the environment variable KUBEBRIDGE_TEST_UNSET is not set"]),
        ("sinks:\n  - type: webhook\n    url: http://h/\n    signingSecretFile: /nonexistent/secret\n", ["sinks[0].signingSecretFile: /nonexistent/secret cannot be read"]),
        ("sinks:\n  - type: webhook\n    url: http://h/\n    signingSecretFile: /dev/null\n    signingSecretEnv: X\n", ["not both"]),
        ("sinks:\n  - type: webhook\n    url: http://h/\n    filter:\n      include: [deployments]\n      labels: x\n",
         ["sinks[0].filter.include: \"deployments\" is not group/version/resource", "sinks[0].filter.labels: unknown key"]),
    ])
    func problems(text: String, expected: [String]) {
        let error = #expect(throws: ConfigurationError.self) { try Configuration.parse(text, file: "bridge.yaml") }
        let problems = error?.problems ?? []
        for fragment in expected {
            #expect(problems.contains { $0.contains(fragment) }, "\(problems) should mention \(fragment)")
        }
    }
}
