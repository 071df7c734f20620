import BridgeCheckpoint
import BridgeCore
import Foundation
import KafkaSink
import KubeAPI
import KubeModel
import KubeTestServer
import Testing
import TestSupport

/// How hard the chaos run pushes. The test command runs the defaults; `scripts/chaos.sh` sets
/// the environment for a long run.
struct ChaosPlan: CustomStringConvertible {
    /// SIGKILLs of the bridge (`KUBEBRIDGE_CHAOS_KILLS`).
    var kills = 20
    /// Writes per second of the churn (`KUBEBRIDGE_CHAOS_RATE`).
    var rate = 80.0
    /// How long each start of the bridge lives before its SIGKILL, in seconds.
    var alive: ClosedRange<Double> = 0.8...2.5
    /// Seeds the churn and the kill times (`KUBEBRIDGE_CHAOS_SEED`; random when unset, and printed).
    var seed = UInt64.random(in: 1...UInt64.max)

    static func fromEnvironment() -> ChaosPlan {
        var plan = ChaosPlan()
        let environment = ProcessInfo.processInfo.environment
        if let kills = environment["KUBEBRIDGE_CHAOS_KILLS"].flatMap(Int.init), kills > 0 { plan.kills = kills }
        if let rate = environment["KUBEBRIDGE_CHAOS_RATE"].flatMap(Double.init), rate > 0 { plan.rate = rate }
        if let seed = environment["KUBEBRIDGE_CHAOS_SEED"].flatMap(UInt64.init) { plan.seed = seed }
        return plan
    }

    var description: String { "\(kills) kills, churn \(Int(rate)) writes/s, seed \(seed)" }

    /// The faults of one start, by its place in the run. Each repeats every ten starts, so a
    /// long run meets each of them many times.
    func faults(at index: Int) -> Set<ChaosFault> {
        var faults: Set<ChaosFault> = []
        if index % 5 == 1 { faults.insert(.cutWatches) }
        if index % 10 == 3 { faults.insert(.compactWhileDown) }
        if index % 10 == 5 { faults.insert(.restartNATS) }
        if index % 10 == 7 { faults.insert(.kafkaBrokerDown) }
        if index % 10 == 9 { faults.insert(.webhookUnavailable) }
        if index == kills / 2 { faults.insert(.removeCRDWhileDown) }
        return faults
    }
}

enum ChaosFault: String, Hashable, CaseIterable {
    /// The next watches send some events, then half a line, then the connection ends.
    case cutWatches = "watch streams cut mid-line"
    /// Compaction (and a rolled watch cache) between a SIGKILL and the next start.
    case compactWhileDown = "compaction while the bridge is down"
    /// nats-server SIGKILLed and started again on its store, while the bridge runs.
    case restartNATS = "nats-server SIGKILLed and restarted"
    /// The Kafka broker refuses connections for three seconds (librdkafka's mock broker down, then up).
    case kafkaBrokerDown = "Kafka broker down for 3 s"
    /// The webhook receiver answers 503 for three seconds.
    case webhookUnavailable = "webhook 503 for 3 s"
    /// A CRD with live objects deleted between a SIGKILL and the next start.
    case removeCRDWhileDown = "CRD removed while the bridge is down"
}

/// What every sink held, and the checkpoints, at a moment the bridge was dead.
struct ChaosSnapshot {
    /// The checkpointed resourceVersion per storage (`configmaps`, `deployments.apps`).
    var checkpoints: [String: Int64]
    var fileLines: Int
    var webhookLines: Int
    /// Next offset per partition.
    var kafka: [Int: Int]
    var natsLastSequence: Int
}

@Suite("Chaos: every sink at once, under faults")
struct ChaosTests {
    static let topic = "kube.chaos"
    static let stream = "KUBE"
    /// Left out by kubebridge's default selection; the churn does not write them either.
    static let unselectedStorages: Set<String> = ["events", "leases.coordination.k8s.io"]

    @Test("done-when: churn over 20+ resources into file, Kafka, NATS and a webhook; SIGKILLs, broker and nats-server restarts, a 503 stretch, cut watches, compaction and a CRD removed while down: nothing missing, in order, no checkpoint ahead of a sink")
    func chaos() async throws {
        let plan = ChaosPlan.fromEnvironment()
        print("chaos run: \(plan)")
        let started = ContinuousClock.now
        let kafka = try KafkaMockCluster(brokers: 1)
        kafka.createTopic(Self.topic, partitions: 4)
        let nats = try await NATSServer.start()
        let receiver = try await WebhookReceiver.start()
        var serverOptions = KubeTestServer.Options()
        serverOptions.recordHistory = true
        serverOptions.bookmarkInterval = .milliseconds(500)
        let server = try await KubeTestServer.start(serverOptions)
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let bridge = try BridgeProcess(server: server, directory: directory, include: ["*/*/*"], extraSinks: """
              - type: kafka
                name: kafka
                brokers: [\(kafka.bootstrapServers)]
                topic: \(Self.topic)
                batch: {linger: 2ms, size: 50}   # several batches in flight (the Kafka sink's default is 4)
              - type: nats
                name: nats
                servers: [\(nats.url)]
                stream: \(Self.stream)
                createStream: true
                retry: {initial: 100ms, maximum: 1s}
                batch: {linger: 2ms, size: 50, inFlight: 4}
              - type: webhook
                name: hook
                url: \(receiver.url)
                concurrency: 4
                retry: {initial: 100ms, maximum: 1s}
                batch: {linger: 2ms}
            """)

        var churnOptions = Churn.Options()
        churnOptions.rate = plan.rate
        churnOptions.kinds = .wide
        churnOptions.objectsPerKind = 4
        churnOptions.seed = plan.seed
        churnOptions.customResources = [
            Churn.CustomResource(group: "example.org", kind: "Gadget", installAfter: .zero),
            .widgets(installAfter: .seconds(5)),
        ]
        let churn = Task { try await Churn(server: server, options: churnOptions).run() }
        var random = SplitMix64(seed: plan.seed)
        var snapshots: [ChaosSnapshot] = []
        var met: [ChaosFault: Int] = [:]
        for index in 0..<plan.kills {
            let faults = plan.faults(at: index)
            for fault in faults { met[fault, default: 0] += 1 }
            if faults.contains(.cutWatches) {
                _ = try await server.inject(FaultRule(verbs: [.watch], action: .cutWatchMidLine(afterEvents: 3, cleanEnd: false), count: 8))
            }
            try bridge.start()
            let alive = plan.alive.lowerBound + Double(random.next() % 1000) / 1000 * (plan.alive.upperBound - plan.alive.lowerBound)
            let deadline = ContinuousClock.now + .seconds(alive)
            if faults.contains(.restartNATS) {
                try await Task.sleep(for: .milliseconds(300))
                await nats.kill()
                try await Task.sleep(for: .seconds(1.5))
                try await nats.run()
            }
            if faults.contains(.kafkaBrokerDown) {
                try await Task.sleep(for: .milliseconds(300))
                kafka.setBrokerDown(1)
                try await Task.sleep(for: .seconds(3))
                kafka.setBrokerUp(1)
            }
            if faults.contains(.webhookUnavailable) {
                try await receiver.script([.status(503, seconds: 3)])
                try await Task.sleep(for: .seconds(3))
            }
            try await Task.sleep(until: deadline)
            await bridge.kill()
            snapshots.append(try await Self.snapshot(bridge: bridge, receiver: receiver, kafka: kafka.bootstrapServers, nats: nats.url))
            if faults.contains(.compactWhileDown) {
                try await Task.sleep(for: .milliseconds(500))
                try await server.compact()
            }
            if faults.contains(.removeCRDWhileDown) {
                let (status, body) = try await server.perform("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.org")
                #expect(status == 200, "\(body)")
                try await waitUntil(timeout: .seconds(60)) {
                    (try? await server.perform("GET", "/apis/example.org/v1").status) == 404
                }
            }
        }
        churn.cancel()
        let report = try? await churn.value
        try await server.clearFaults()

        // A last start catches up with everything and stops cleanly.
        try bridge.start()
        try await bridge.waitUntilWatching()
        let history = try await server.history().filter { !Self.unselectedStorages.contains($0.storage) }
        let finalVersion = history.map(\.resourceVersion).max() ?? 0
        try await waitUntil(timeout: .seconds(120), interval: .seconds(1)) {
            bridge.events().contains { Int64($0["resourceversion"] as? String ?? "") == finalVersion }
                && receiver.events().contains { ($0["resourceversion"] as? String).flatMap(Int64.init) == finalVersion }
        }
        try await Task.sleep(for: .seconds(1))
        let exit = await bridge.stop()
        #expect(exit == 0, "\(((try? String(contentsOf: bridge.log, encoding: .utf8)) ?? "").suffix(3000))")

        let records = try await KafkaTopicReader.read(bootstrap: kafka.bootstrapServers, topics: [Self.topic])
        let messages = try await JetStreamReader.read(url: nats.url, stream: Self.stream)
        let fileEvents = bridge.events()
        let hookEvents = receiver.events()
        let sinks: [(name: String, delivered: [DeliveryAudit.Delivered])] = [
            ("file", fileEvents.compactMap(DeliveryAudit.Delivered.init)),
            ("kafka", records.compactMap { DeliveryAudit.Delivered(attributes: $0.attributes) }),
            ("nats", messages.compactMap { DeliveryAudit.Delivered(attributes: $0.cloudEventAttributes) }),
            ("webhook", hookEvents.compactMap(DeliveryAudit.Delivered.init)),
        ]
        #expect(sinks[1].delivered.count == records.count && sinks[2].delivered.count == messages.count && sinks[3].delivered.count == hookEvents.count,
                "every message carries id, uid, resourceversion and changetype")

        // The end: every sink has every object's final state, in order, duplicates identical.
        var lines: [String] = []
        for (index, sink) in sinks.enumerated() {
            let others = Set(sinks.enumerated().filter { $0.offset != index }.flatMap { $0.element.delivered.map(\.uid) })
            let audit = DeliveryAudit(delivered: sink.delivered, history: history, seenElsewhere: others)
            lines.append("\(sink.name.padding(toLength: 8, withPad: " ", startingAt: 0)) expected \(history.count) changes, delivered \(sink.delivered.count), duplicates \(audit.duplicates), missing \(audit.missing.count)")
            #expect(audit.missing.isEmpty, "\(sink.name) misses: \(audit.missing.prefix(20))")
            #expect(audit.disorder.isEmpty, "\(sink.name) out of order: \(audit.disorder.prefix(10))")
            #expect(audit.conflicting.isEmpty, "\(sink.name): one id for two states: \(audit.conflicting.prefix(10))")
        }

        // At each SIGKILL: what the checkpoints covered, every sink already held.
        var behind: [String] = []
        for (number, snapshot) in snapshots.enumerated() {
            let covered = history.filter { $0.resourceVersion <= snapshot.checkpoints[$0.storage, default: 0] }
            let prefixes: [(String, [DeliveryAudit.Delivered])] = [
                ("file", Array(sinks[0].delivered.prefix(snapshot.fileLines))),
                ("kafka", records.filter { $0.offset < snapshot.kafka[$0.partition, default: 0] }.compactMap { DeliveryAudit.Delivered(attributes: $0.attributes) }),
                ("nats", messages.filter { $0.sequence <= snapshot.natsLastSequence }.compactMap { DeliveryAudit.Delivered(attributes: $0.cloudEventAttributes) }),
                ("webhook", Array(sinks[3].delivered.prefix(snapshot.webhookLines))),
            ]
            for (index, (name, prefix)) in prefixes.enumerated() {
                let others = Set(prefixes.enumerated().filter { $0.offset != index }.flatMap { $0.element.1.map(\.uid) })
                let audit = DeliveryAudit(delivered: prefix, history: covered, seenElsewhere: others, historyEnds: false)
                behind += audit.missing.prefix(5).map { "after kill \(number + 1), \(name) lacked \($0)" }
            }
        }
        #expect(behind.isEmpty, "a checkpoint got ahead of a sink: \(behind.prefix(20))")

        let stats = try await receiver.stats()
        let gadgets = history.filter { $0.storage == "gadgets.example.org" }
        #expect(gadgets.contains { $0.type == "DELETED" }, "the removed CRD had objects")
        #expect(stats.statuses["503", default: 0] > 0 || met[.webhookUnavailable, default: 0] == 0, "the 503 stretch was never hit")
        let resources = Set(history.map(\.storage))
        #expect(resources.count >= 20, "\(resources.sorted())")
        let elapsed = ContinuousClock.now - started
        print("""
            chaos run: \(plan), \(Int(elapsed.components.seconds)) s; \(history.count) changes over \(resources.count) resources; \
            \(report?.total ?? 0) churn writes; faults: \(ChaosFault.allCases.map { "\($0.rawValue) ×\(met[$0, default: 0])" }.joined(separator: ", "))
            \(lines.joined(separator: "\n"))
            checkpoints checked at \(snapshots.count) SIGKILLs: \(behind.count) changes a checkpoint covered were missing from a sink
            """)
        try await server.stop()
        await receiver.stop()
        await nats.stop()
        kafka.close()
    }

    /// Reads the checkpoints and each sink's position while the bridge is dead.
    static func snapshot(bridge: BridgeProcess, receiver: WebhookReceiver, kafka: String, nats: String) async throws -> ChaosSnapshot {
        let store = try SQLiteCheckpointStore(path: bridge.directory.appendingPathComponent("state/checkpoints.sqlite").path)
        var checkpoints: [String: Int64] = [:]
        for (scope, checkpoint) in try await store.load() where scope.namespace == nil {
            let storage = scope.resource.group.isEmpty ? scope.resource.resource : "\(scope.resource.resource).\(scope.resource.group)"
            checkpoints[storage] = Int64(checkpoint.resourceVersion ?? "") ?? 0
        }
        let result = try await ProcessRunner.runBinary("/usr/bin/env", ["python3", "-c", positionsScript, kafka, topic, nats, stream], timeout: 60)
        guard result.status == 0, let positions = try JSONSerialization.jsonObject(with: Data(result.stdout)) as? [String: Any] else {
            throw TestFailure(message: "reading the brokers' positions failed: \(String(decoding: result.stderr, as: UTF8.self))")
        }
        var offsets: [Int: Int] = [:]
        for (partition, offset) in positions["kafka"] as? [String: Int] ?? [:] { offsets[Int(partition)!] = offset }
        return ChaosSnapshot(checkpoints: checkpoints, fileLines: completeLines(bridge.outputPath), webhookLines: receiver.events().count,
                             kafka: offsets, natsLastSequence: positions["nats"] as? Int ?? 0)
    }

    /// Lines that end in a newline: a line cut by the SIGKILL is not one.
    static func completeLines(_ path: String) -> Int {
        guard let data = FileManager.default.contents(atPath: path) else { return 0 }
        return data.reduce(0) { $1 == UInt8(ascii: "\n") ? $0 + 1 : $0 }
    }

    /// The next offset of each partition of the topic, and the stream's last sequence.
    static let positionsScript = """
        import asyncio, json, sys
        from confluent_kafka import Consumer, TopicPartition
        import nats
        from nats.js.errors import NotFoundError
        consumer = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "kubebridge-chaos"})
        topic = sys.argv[2]
        kafka = {}
        for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
            kafka[str(partition)] = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
        consumer.close()
        async def last_sequence():
            connection = await nats.connect(sys.argv[3])
            try:
                return (await connection.jetstream().stream_info(sys.argv[4])).state.last_seq
            except NotFoundError:
                return 0
            finally:
                await connection.close()
        print(json.dumps({"kafka": kafka, "nats": asyncio.run(last_sequence())}))
        """
}
