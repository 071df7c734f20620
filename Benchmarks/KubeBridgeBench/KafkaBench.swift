import ArgumentParser
import BridgeApp
import BridgeCore
import Foundation
import KafkaSink
import KubeModel
import NIOCore
import Synchronization

struct KafkaSinkBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kafka-sink",
        abstract: "Changes of 1 KiB objects through the whole bridge into Kafka, beside kcat producing the same messages to the same broker.",
        discussion: """
            Without --bootstrap, the broker is librdkafka's mock cluster in a child process. The
            bridge's records are then read back with kcat, and kcat produces the same keys, values
            and headers to another topic with the sink's producer settings: the bare producer's rate.
            """)

    @OptionGroup var server: ServerOptions

    @OptionGroup var run: SinkRunOptions

    @Option(help: "A broker to use instead of the mock cluster, host:port.")
    var bootstrap: String?

    @Option(help: "kcat's path.")
    var kcat = "/usr/bin/kcat"

    @Option(help: "Rounds of kcat and the sink alone, one after the other: this machine's rates vary run to run, their ratio in one round less so.")
    var rounds = 3

    @Flag(help: "Only the sink against kcat, with generated records: no API server, no bridge run.")
    var sinkOnly = false

    func run() async throws {
        let broker = bootstrap == nil ? try MockBrokerProcess() : nil
        defer { broker?.stop() }
        let bootstrap = try bootstrap ?? broker!.bootstrap()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kubebridge-bench-kafka-\(getpid())")
        try? FileManager.default.removeItem(at: directory)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var options = KafkaSinkOptions(brokers: [bootstrap])
        options.topic = "bench.bridge"
        let dump = directory.appendingPathComponent("records.txt").path

        var measured: BridgeMeasurement?
        if sinkOnly {
            try generatedRecords(run.objects).joined().write(toFile: dump, atomically: false, encoding: .utf8)
        } else {
            let server = try await ServerProcess(binary: server.kubebridge)
            try await server.generate(count: run.objects, bytes: 1024)
            let sink = Configuration.Sink(name: "kafka", kind: .kafka(options))
            measured = try await measureBridge(server: server, sink: sink, objects: run.objects, rate: run.rate, seconds: run.seconds,
                                               stateDirectory: directory.appendingPathComponent("state").path)
            await server.stop()
            // The bridge's first `objects` records, for the bare producer and the sink alone.
            try runKcat(["-C", "-b", bootstrap, "-t", "bench.bridge", "-c", String(run.objects), "-e", "-q", "-f", "%k\t%s\n"], output: dump)
        }
        let events = try events(records: dump)

        // The bare producer: the same keys, values and (binary-mode) headers, the sink's settings.
        let headerArguments = KafkaSink.headers(of: events[0], mode: options.mode).flatMap { ["-H", "\($0.name)=\($0.value)"] }
        let settings = options.producerProperties.filter { !["bootstrap.servers", "client.id"].contains($0.key) }
            .sorted { $0.key < $1.key }.flatMap { ["-X", "\($0.key)=\($0.value)"] }
        if let measured { print(measured.report(sink: "Kafka")) }
        print("bare producer: kcat with \(settings.filter { $0 != "-X" }.joined(separator: " "))")
        var bareRates: [Double] = []
        var ratios: [Double] = []
        for round in 1...max(1, rounds) {
            let started = ContinuousClock.now
            let childrenCPU = cpuSeconds(children: true)
            try runKcat(["-P", "-b", bootstrap, "-t", "bench.bare.\(round)", "-K", "\t", "-l"] + headerArguments + settings + [dump])
            let bareRate = Double(events.count) / (ContinuousClock.now - started).seconds
            let bareCPU = (cpuSeconds(children: true) - childrenCPU) / Double(events.count) * 1e6
            let stage = try await sinkStageRate(events: events, options: options, topic: "bench.stage.\(round)")
            bareRates.append(bareRate)
            ratios.append(stage.rate / bareRate)
            print(String(format: "round %d: kcat %.0f events/s (%.1f µs CPU per event); the Kafka sink alone %.0f events/s (%.1f µs CPU per event, first confirmation after %.0f ms): %.2f× kcat",
                         round, bareRate, bareCPU, stage.rate, stage.cpuPerEvent, stage.firstConfirmation.seconds * 1000, stage.rate / bareRate))
        }
        let median = { (values: [Double]) in values.sorted()[values.count / 2] }
        print(String(format: "the Kafka sink alone: median %.2f× kcat over %d rounds", median(ratios), ratios.count))
        if let measured { print(String(format: "the whole bridge (initial sync): %.2f× kcat's median rate", measured.syncRate / median(bareRates))) }
    }

    /// `key<TAB>value` lines of ConfigMaps of about 1 KiB.
    func generatedRecords(_ count: Int) -> [String] {
        let filler = String(repeating: "x", count: 900)
        return (0..<count).map { index in
            let uid = UUID().uuidString.lowercased()
            return #"\#(uid)\#t{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm-\#(index)","namespace":"bench","uid":"\#(uid)","resourceVersion":"\#(index + 1)"},"data":{"payload":"\#(filler)"}}"# + "\n"
        }
    }

    /// The records of a `key<TAB>value` file as events of changes.
    func events(records path: String) throws -> [OutboundEvent] {
        let builder = EnvelopeBuilder()
        var ledger = DeliveryLedger(sinkCount: 1)
        let scope = WatchScope(GroupVersionResource(group: "", version: "v1", resource: "configmaps"))
        var events: [OutboundEvent] = []
        for (index, line) in try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").enumerated() {
            let fields = line.split(separator: "\t", maxSplits: 1)
            guard fields.count == 2 else { continue }
            var meta = ObjectMeta()
            meta.apiVersion = "v1"
            meta.kind = "ConfigMap"
            meta.namespace = "bench"
            meta.name = "cm-\(index)"
            meta.uid = String(fields[0])
            meta.resourceVersion = String(index + 1)
            let change = Change(type: .synced, scope: scope, object: KubeObject(metadata: meta, bytes: ByteBuffer(string: String(fields[1]))))
            guard let token = ledger.received(.change(change), at: .zero).token else { continue }
            events.append(OutboundEvent(envelope: try builder.envelope(for: change, receivedAt: Date()), token: token, resource: scope.resource, namespace: "bench"))
        }
        guard !events.isEmpty else { throw ValidationError("no records in \(path)") }
        return events
    }

    /// The events through a pipeline into a `KafkaSink`: the sink's own rate, without the API
    /// server and the informers in front.
    func sinkStageRate(events: [OutboundEvent], options: KafkaSinkOptions, topic: String) async throws
        -> (rate: Double, cpuPerEvent: Double, firstConfirmation: Duration) {
        var options = options
        options.topic = topic
        let sink = try KafkaSink(name: "kafka", options: options, logger: benchLogger())
        let acknowledged = Mutex(0)
        let firstConfirmation = Mutex<ContinuousClock.Instant?>(nil)
        let pipeline = Pipeline(sink: sink, index: 0, options: KafkaSinkOptions.defaultPipeline, deadLetters: nil, logger: benchLogger()) { tokens, _ in
            acknowledged.withLock { $0 += tokens.count }
            firstConfirmation.withLock { $0 = $0 ?? .now }
        }
        let started = ContinuousClock.now
        let startCPU = cpuSeconds()
        let running = Task { try await pipeline.run() }
        for event in events { try await pipeline.enqueue(event) }
        pipeline.finish()
        try await running.value
        let elapsed = ContinuousClock.now - started
        let cpu = cpuSeconds() - startCPU
        try await sink.close()
        guard acknowledged.withLock({ $0 }) == events.count else { throw ValidationError("the sink stage acknowledged \(acknowledged.withLock { $0 }) of \(events.count)") }
        return (Double(events.count) / elapsed.seconds, cpu / Double(events.count) * 1e6, (firstConfirmation.withLock { $0 } ?? started) - started)
    }

    @discardableResult
    func runKcat(_ arguments: [String], output: String? = nil) throws -> Data {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: kcat)
        process.arguments = arguments
        let pipe = Pipe()
        if let output {
            _ = FileManager.default.createFile(atPath: output, contents: nil)
            process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
        } else {
            process.standardOutput = pipe
        }
        try process.run()
        let data = output == nil ? pipe.fileHandleForReading.readDataToEndOfFile() : Data()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw ValidationError("kcat \(arguments.joined(separator: " ")) exited with \(process.terminationStatus)") }
        return data
    }
}

/// librdkafka's mock cluster in a child process (`kubebridge-bench kafka-broker`), so that its
/// memory and CPU are not the bridge's.
final class MockBrokerProcess: Sendable {
    let child: BenchChild

    init() throws {
        child = try BenchChild(["kafka-broker"])
    }

    /// The bootstrap address the child prints first.
    func bootstrap() throws -> String {
        try child.firstLine()
    }

    /// The broker refuses connections until `up`.
    func down() { child.send("down") }

    func up() { child.send("up") }

    func stop() {
        child.stop()
    }
}

struct KafkaBrokerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kafka-broker", abstract: "Runs librdkafka's mock cluster (one broker) and prints its address, until stdin closes; `down` and `up` lines take the broker down and up.",
        shouldDisplay: false)

    func run() throws {
        let cluster = try KafkaMockCluster(brokers: 1)
        cluster.createTopic("bench.bridge", partitions: 4)
        cluster.createTopic("bench.bare", partitions: 4)
        cluster.createTopic("bench.stage", partitions: 4)
        FileHandle.standardOutput.write(Data("\(cluster.bootstrapServers)\n".utf8))
        while let line = readLine() {
            switch line {
            case "down": cluster.setBrokerDown(1)
            case "up": cluster.setBrokerUp(1)
            default: break
            }
        }
        cluster.close()
    }
}

/// A helper of the benchmarks in a child process (this executable, another subcommand), so that
/// its memory and CPU are not the bridge's: it prints a first line, takes commands on stdin, and
/// ends when stdin closes.
final class BenchChild: Sendable {
    let process: Process
    let output = Pipe()
    let input = Pipe()

    init(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
        process.arguments = arguments
        process.standardOutput = output
        process.standardInput = input
        try process.run()
        self.process = process
    }

    func firstLine() throws -> String {
        var line = Data()
        while let byte = try output.fileHandleForReading.read(upToCount: 1), let first = byte.first, first != UInt8(ascii: "\n") {
            line.append(first)
        }
        guard !line.isEmpty else { throw ValidationError("\(process.arguments?.first ?? "the child") did not start") }
        return String(decoding: line, as: UTF8.self)
    }

    func send(_ command: String) {
        input.fileHandleForWriting.write(Data((command + "\n").utf8))
    }

    func stop() {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }
}
