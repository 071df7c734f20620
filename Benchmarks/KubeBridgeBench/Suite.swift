import ArgumentParser
import BridgeApp
import BridgeCore
import FileSink
import Foundation
import KafkaSink
import KubeAPI
import KubeModel
import NATSSink
import NIOCore
import WebhookSink

/// One row of the suite's table.
struct SuiteRow: Codable {
    var sink: String
    var scenario: String
    var events: Int
    /// Events per second through the bridge, acknowledged by the sink.
    var rate: Double
    /// Events per second a bare read of the same server delivered in the same run.
    var sourceRate: Double?
    /// Change-to-ack latency percentiles, in milliseconds.
    var p50: Double?
    var p99: Double?
    var p999: Double?
    var peakRSS: Int
    var rssPerObject: Int?
    /// CPU seconds (user + system) of the bridge's process per 1,000 events.
    var cpuPerThousand: Double?
    var note: String?
}

/// The options the suite passes on to each child.
struct SuiteOptions: ParsableArguments {
    @Option(help: "Objects listed at start, spread over --resources resources.")
    var objects = 100_000

    @Option(help: "Resources the objects are spread over: ConfigMaps and CRDs.")
    var resources = 50

    @Option(help: "Churn rates, changes/s, comma-separated.")
    var rates = "1000,5000,20000"

    @Option(help: "Seconds of each churn run.")
    var seconds = 10

    @Option(help: "Seconds of the sink outage (at 1,000 events/s); 0 to skip.")
    var outage = 60

    @Flag(help: "Compare each change with the state last sent of its object (changedpaths), as a configuration file does by default.")
    var changedPaths = false

    var arguments: [String] {
        ["--objects", String(objects), "--resources", String(resources), "--rates", rates, "--seconds", String(seconds), "--outage", String(outage)]
            + (changedPaths ? ["--changed-paths"] : [])
    }
}

struct BenchSuite: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "suite",
        abstract: "Every scenario for every sink, each sink in a fresh process: the table of docs/benchmarks.md.",
        discussion: """
            Per sink: an initial list of --objects objects of 1 KiB over --resources resources,
            beside a bare paginated list of the same objects (every resource at once, the bytes
            discarded); changes to the listed ConfigMaps at each of --rates for --seconds, beside a
            bare watch that counts the same events; a --outage seconds outage of the sink at 1,000 events/s (not
            for the file sink). Then --idle-resources resources with no objects. Latency is from
            the moment the bridge reads a change to the sink's acknowledgement.
            """)

    @OptionGroup var server: ServerOptions

    @OptionGroup var suite: SuiteOptions

    @Option(help: "Sinks, comma-separated: file, kafka, nats, webhook.")
    var sinks = "file,kafka,nats,webhook"

    @Option(help: "Resources watched in the idle scenario; 0 to skip.")
    var idleResources = 200

    @Option(help: "Also write the Markdown table to this file.")
    var output: String?

    func run() async throws {
        var rows: [SuiteRow] = []
        let passOn = suite.arguments + (server.kubebridge.map { ["--kubebridge", $0] } ?? [])
        for sink in sinks.split(separator: ",").map(String.init) {
            rows += try runChild(["suite-sink", "--sink", sink] + passOn)
        }
        if idleResources > 0 {
            rows += try runChild(["suite-idle", "--resources", String(idleResources)] + (server.kubebridge.map { ["--kubebridge", $0] } ?? []))
        }
        let table = Self.table(rows)
        print(table)
        if let output { try table.write(toFile: output, atomically: true, encoding: .utf8) }
    }

    /// Runs a child and collects the rows it prints; its other output (progress) goes to stderr.
    func runChild(_ arguments: [String]) throws -> [SuiteRow] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw ValidationError("\(arguments.joined(separator: " ")) exited with \(process.terminationStatus)") }
        return try String(decoding: data, as: UTF8.self).split(separator: "\n").map { try JSONDecoder().decode(SuiteRow.self, from: Data($0.utf8)) }
    }

    static func table(_ rows: [SuiteRow]) -> String {
        func milliseconds(_ value: Double?) -> String { value.map { String(format: $0 < 10 ? "%.2f" : "%.0f", $0) } ?? "" }
        var lines = [
            "| sink | scenario | events | events/s | source events/s | p50 ms | p99 ms | p999 ms | peak RSS | RSS per object | CPU s per 1k events | note |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for row in rows {
            let source = row.sourceRate.map { String(format: "%.0f (%.2f×)", $0, row.rate / $0) } ?? ""
            lines.append([
                row.sink, row.scenario, String(row.events), row.events == 0 ? "" : String(format: "%.0f", row.rate), source,
                milliseconds(row.p50), milliseconds(row.p99), milliseconds(row.p999), mib(row.peakRSS),
                row.rssPerObject.map { "\($0) B" } ?? "", row.cpuPerThousand.map { String(format: "%.3f", $0) } ?? "", row.note ?? "",
            ].joined(separator: " | ").wrappedInPipes)
        }
        return lines.joined(separator: "\n")
    }
}

extension String {
    var wrappedInPipes: String { "| \(self) |" }
}

/// CPU seconds (user and system) this process has used, or with `children`, its children that
/// have been waited for.
func cpuSeconds(children: Bool = false) -> Double {
    var usage = rusage()
    getrusage(children ? RUSAGE_CHILDREN.rawValue : RUSAGE_SELF.rawValue, &usage)
    func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Sockets this process has open.
func openSockets() -> Int {
    let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return descriptors.filter { ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0)")) ?? "").hasPrefix("socket:") }.count
}

func progress(_ message: String) {
    FileHandle.standardError.write(Data("[\(Date().formatted(date: .omitted, time: .standard))] \(message)\n".utf8))
}

func emit(_ row: SuiteRow) throws {
    FileHandle.standardOutput.write(try JSONEncoder().encode(row) + Data("\n".utf8))
}

/// Where a sink's events go, and how to take it down and up again.
struct SinkEndpoint {
    var sink: Configuration.Sink
    var down: (() async throws -> Void)?
    var up: (() async throws -> Void)?
    var stop: () async -> Void

    static func start(_ kind: String, directory: URL) async throws -> SinkEndpoint {
        switch kind {
        case "file":
            let path = directory.appendingPathComponent("events.jsonl").path
            return SinkEndpoint(sink: Configuration.Sink(name: "file", kind: .file(FileSink.Options(path: path))), stop: {})
        case "kafka":
            let broker = try MockBrokerProcess()
            var options = KafkaSinkOptions(brokers: [try broker.bootstrap()])
            options.topic = "bench.bridge"
            return SinkEndpoint(sink: Configuration.Sink(name: "kafka", kind: .kafka(options)), down: { broker.down() }, up: { broker.up() },
                                stop: { broker.stop() })
        case "nats":
            let server = try NATSProcess(directory: directory.appendingPathComponent("nats"))
            try await server.start()
            var options = NATSSinkOptions(servers: [server.url])
            options.stream = "BENCH"
            options.createStream = true
            return SinkEndpoint(sink: Configuration.Sink(name: "nats", kind: .nats(options)), down: { server.kill() }, up: { try await server.start() },
                                stop: { server.kill() })
        case "webhook":
            let receiver = try BenchChild(["webhook-receiver"])
            let port = try receiver.firstLine()
            let options = WebhookSinkOptions(url: "http://127.0.0.1:\(port)/events")
            return SinkEndpoint(sink: Configuration.Sink(name: "webhook", kind: .webhook(options)), down: { receiver.send("fail") },
                                up: { receiver.send("ok") }, stop: { receiver.stop() })
        default:
            throw ValidationError("unknown sink \(kind): file, kafka, nats or webhook")
        }
    }
}

/// `nats-server -js` on a fixed port and store, so that it can be killed and started again.
final class NATSProcess: @unchecked Sendable {
    let port = 14_222 + Int(getpid() % 1000)
    let directory: URL
    private var process: Process?
    var url: String { "nats://127.0.0.1:\(port)" }

    init(directory: URL) throws {
        self.directory = directory
    }

    func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ["/usr/sbin/nats-server", "/usr/bin/nats-server"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "nats-server")
        process.arguments = ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", directory.path]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        try await Task.sleep(for: .milliseconds(500))
    }

    func kill() {
        guard let process else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }
}

struct SuiteSink: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "suite-sink", abstract: "One sink's scenarios of the suite; rows as JSON lines.",
                                                    shouldDisplay: false)

    @OptionGroup var server: ServerOptions

    @OptionGroup var suite: SuiteOptions

    @Option var sink: String

    func run() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kubebridge-suite-\(sink)-\(getpid())")
        try? FileManager.default.removeItem(at: directory)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let endpoint = try await SinkEndpoint.start(sink, directory: directory)
        let server = try await ServerProcess(binary: server.kubebridge)
        do {
            try await measure(endpoint: endpoint, server: server, directory: directory)
        } catch {
            await server.stop()
            await endpoint.stop()
            throw error
        }
        await server.stop()
        await endpoint.stop()
    }

    func measure(endpoint: SinkEndpoint, server: ServerProcess, directory: URL) async throws {
        let resources = try await Self.prepareResources(server, count: suite.resources)
        let perResource = suite.objects / resources.count
        let total = perResource * resources.count
        progress("\(sink): creating \(total) objects over \(resources.count) resources")
        for resource in resources {
            _ = try await server.control("generate", query: [("namespace", "bench"), ("count", String(perResource)), ("bytes", "1024"),
                                                             ("prefix", "object"), ("resource", resource.description)])
        }
        while try await server.status()["generating"] as? Bool == true { try await Task.sleep(for: .milliseconds(100)) }

        var configuration = Configuration()
        configuration.cluster.kubeconfig = server.kubeconfig
        configuration.stateDirectory = directory.appendingPathComponent("state").path
        configuration.selection.include = resources.map(\.description)
        configuration.sinks = [endpoint.sink]
        configuration.envelopes.changedPaths = suite.changedPaths
        configuration.operationsAddress = nil
        let probe = LatencyProbe()
        let meter = Meter()
        let runtime = try await BridgeRuntime(configuration: configuration, logger: benchLogger(), probe: probe)
        progress("\(sink): the initial sync")
        var started = meter.start()
        let task = Task { try await runtime.run() }
        try await meter.wait { probe.acknowledged >= total }
        var (elapsed, cpu) = meter.lap(since: started)
        // The bridge at rest: the checkpoints after the sync saved, and the memory they held
        // handed back (the runtime trims the heap again two saves after the sync).
        await runtime.settled()
        let perObject = (residentBytes() - meter.baseline) / total
        var (p50, p99, p999) = probe.percentiles()
        // After the bridge's memory is read: the bare list's buffers would count as the bridge's.
        progress("\(sink): a bare list of every resource")
        let listRate = try await Self.bareList(server.client, resources, objects: total)
        try emit(SuiteRow(sink: sink, scenario: "initial list, \(resources.count) resources", events: total, rate: Double(total) / elapsed, sourceRate: listRate,
                          p50: p50, p99: p99, p999: p999, peakRSS: meter.peak, rssPerObject: perObject, cpuPerThousand: cpu / Double(total) * 1000))

        for rate in suite.rates.split(separator: ",").compactMap({ Int($0) }) {
            progress("\(sink): churn at \(rate) events/s")
            probe.resetLatencies()
            let before = probe.acknowledged
            let count = rate * suite.seconds
            let version = try await server.status()["resourceVersion"] as? Int ?? 0
            // The source's own watch runs in a process of its own: its CPU is not the bridge's.
            let source = try BenchChild(["bare-watch", "--kubeconfig", server.kubeconfig, "--namespace", "bench", "--from", String(version),
                                         "--events", String(count)])
            _ = try source.firstLine()
            started = meter.start()
            let startedAt = Date()
            _ = try await server.control("generate", query: churn(count: count, rate: rate, objects: perResource))
            try await meter.wait { probe.acknowledged >= before + count }
            (elapsed, cpu) = meter.lap(since: started)
            let sourceEnded = try source.firstLine()
            source.stop()
            let sourceElapsed = Duration.seconds((Double(sourceEnded) ?? 0) - startedAt.timeIntervalSince1970)
            (p50, p99, p999) = probe.percentiles()
            try emit(SuiteRow(sink: sink, scenario: "churn \(rate) events/s for \(suite.seconds) s", events: count, rate: Double(count) / elapsed,
                              sourceRate: Double(count) / sourceElapsed.seconds, p50: p50, p99: p99, p999: p999, peakRSS: meter.peak,
                              cpuPerThousand: cpu / Double(count) * 1000))
        }

        if suite.outage > 0, let down = endpoint.down, let up = endpoint.up {
            progress("\(sink): the sink down for \(suite.outage) s at 1000 events/s")
            probe.resetLatencies()
            let before = probe.acknowledged
            let count = 1000 * suite.outage
            meter.resetPeak()
            try await down()
            started = meter.start()
            _ = try await server.control("generate", query: churn(count: count, rate: 1000, objects: perResource))
            try await meter.wait { try await server.status()["generating"] as? Bool == false }
            let back = ContinuousClock.now
            try await up()
            try await meter.wait { probe.acknowledged >= before + count }
            let drained = ContinuousClock.now - back
            (elapsed, cpu) = meter.lap(since: started)
            (p50, p99, p999) = probe.percentiles()
            try emit(SuiteRow(sink: sink, scenario: "sink down \(suite.outage) s at 1000 events/s", events: count, rate: Double(count) / drained.seconds,
                              p50: p50, p99: p99, p999: p999, peakRSS: meter.peak, cpuPerThousand: cpu / Double(count) * 1000,
                              note: String(format: "drained %.1f s after the sink came back (events/s: while draining)", drained.seconds)))
        }
        task.cancel()
        _ = try? await task.value
    }

    /// Changes to the listed ConfigMaps, each in turn.
    func churn(count: Int, rate: Int, objects: Int) -> [(String, String)] {
        [("namespace", "bench"), ("prefix", "object"), ("count", String(count)), ("rate", String(rate)), ("update", String(objects))]
    }

    /// ConfigMaps and `count - 1` CRDs, all served.
    static func prepareResources(_ server: ServerProcess, count: Int) async throws -> [GroupVersionResource] {
        let crds = GroupVersionResource(group: "apiextensions.k8s.io", version: "v1", resource: "customresourcedefinitions")
        var resources = [GroupVersionResource(group: "", version: "v1", resource: "configmaps")]
        for index in 0..<max(0, count - 1) {
            _ = try await server.client.create(crds, namespace: nil, json: """
                {"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"things\(index).bench.example.com"},\
                "spec":{"group":"bench.example.com","names":{"plural":"things\(index)","singular":"thing\(index)","kind":"Thing\(index)"},\
                "scope":"Namespaced","versions":[{"name":"v1","served":true,"storage":true,"schema":{"openAPIV3Schema":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}}]}}
                """)
            resources.append(GroupVersionResource(group: "bench.example.com", version: "v1", resource: "things\(index)"))
        }
        let wanted = Set(resources)
        while try await !wanted.isSubset(of: Set(server.client.discover().resources.map(\.gvr))) {
            try await Task.sleep(for: .milliseconds(200))
        }
        return resources
    }

    /// Lists every resource at once, in pages of 500, discarding the bytes; objects per second.
    static func bareList(_ client: KubeClient, _ resources: [GroupVersionResource], objects: Int) async throws -> Double {
        let started = ContinuousClock.now
        let listed = try await withThrowingTaskGroup(of: Int.self) { group in
            for resource in resources {
                group.addTask {
                    var token: String?
                    var items = 0
                    repeat {
                        var query = [("limit", "500")]
                        if let token { query.append(("continue", token)) }
                        let page = try await client.send(method: .GET, path: resource.collectionPath(namespace: nil), query: query).body
                        token = continueToken(page)
                        items += occurrences(of: #""uid":""#, in: page)
                    } while token != nil
                    return items
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = (ContinuousClock.now - started).seconds
        guard listed == objects else { throw ValidationError("the bare list read \(listed) objects, not \(objects)") }
        return Double(objects) / elapsed
    }

    static func occurrences(of needle: String, in buffer: ByteBuffer) -> Int {
        let pattern = Array(needle.utf8)
        let bytes = buffer.readableBytesView
        var count = 0
        var index = bytes.startIndex
        while let found = bytes[index...].firstIndex(of: pattern[0]) {
            if bytes[found...].starts(with: pattern) { count += 1 }
            index = bytes.index(after: found)
        }
        return count
    }

    /// The `continue` of a list page, read from its metadata without parsing the rest: at the head
    /// of a built-in list, at the tail of a custom resource list (whose keys come sorted).
    static func continueToken(_ page: ByteBuffer) -> String? {
        let bytes = page.readableBytesView
        for part in [bytes.prefix(2048), bytes.suffix(2048)] {
            let text = String(decoding: part, as: UTF8.self)
            guard let range = text.range(of: #""continue":""#) else { continue }
            let token = text[range.upperBound...].prefix { $0 != "\"" }
            return token.isEmpty ? nil : String(token)
        }
        return nil
    }

    /// Watches a namespace's ConfigMaps from `version`, counting lines until `events`; returns when
    /// the last arrived.
    static func bareWatch(_ client: KubeClient, namespace: String, from version: Int, events: Int, opened: @Sendable () -> Void = {}) async throws
        -> ContinuousClock.Instant {
        var seen = 0
        opened()
        try await client.readBody("/api/v1/namespaces/\(namespace)/configmaps", query: [
            ("watch", "true"), ("resourceVersion", String(version)), ("allowWatchBookmarks", "false"),
        ]) { chunk in
            seen += chunk.readableBytesView.reduce(0) { $1 == UInt8(ascii: "\n") ? $0 + 1 : $0 }
            return seen < events
        }
        return ContinuousClock.now
    }
}

/// The suite's source: a bare watch of a namespace's ConfigMaps from a resourceVersion, in a process
/// of its own. Prints `watching` once it is asked for, then, once `--events` events arrived, the
/// time (seconds since 1970) they were all in.
struct BareWatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bare-watch", abstract: "The suite's source watch, in a process of its own.",
                                                    shouldDisplay: false)

    @Option var kubeconfig: String
    @Option var namespace: String
    @Option var from: Int
    @Option var events: Int

    func run() async throws {
        let client = try KubeClient(configuration: try KubeConfigLoader.load(kubeconfig: kubeconfig), logger: benchLogger())
        _ = try await SuiteSink.bareWatch(client, namespace: namespace, from: from, events: events) {
            FileHandle.standardOutput.write(Data("watching\n".utf8))
        }
        FileHandle.standardOutput.write(Data("\(Date().timeIntervalSince1970)\n".utf8))
        try await client.shutdown()
    }
}

/// CPU, time and peak resident memory of this process across a run.
final class Meter: @unchecked Sendable {
    let baseline = residentBytes()
    private(set) var peak = residentBytes()

    struct Start {
        var time: ContinuousClock.Instant
        var cpu: Double
    }

    func start() -> Start { Start(time: .now, cpu: cpuSeconds()) }

    /// Seconds and CPU seconds since `start`.
    func lap(since start: Start) -> (Double, Double) {
        ((ContinuousClock.now - start.time).seconds, cpuSeconds() - start.cpu)
    }

    func resetPeak() { peak = residentBytes() }

    /// Polls `condition` every 20 ms, sampling memory.
    func wait(_ condition: () async throws -> Bool) async throws {
        while try await !condition() {
            peak = max(peak, residentBytes())
            try await Task.sleep(for: .milliseconds(20))
        }
        peak = max(peak, residentBytes())
    }
}

struct SuiteIdle: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "suite-idle", abstract: "The idle scenario of the suite: a row as a JSON line.",
                                                    shouldDisplay: false)

    @OptionGroup var server: ServerOptions

    @Option var resources = 200

    func run() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kubebridge-suite-idle-\(getpid())")
        try? FileManager.default.removeItem(at: directory)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let server = try await ServerProcess(binary: server.kubebridge)
        var configuration = Configuration()
        configuration.cluster.kubeconfig = server.kubeconfig
        configuration.stateDirectory = directory.appendingPathComponent("state").path
        configuration.sinks = [Configuration.Sink(name: "file", kind: .file(FileSink.Options(path: directory.appendingPathComponent("events.jsonl").path)))]
        configuration.operationsAddress = nil
        let builtIns = configuration.selection.select(try await server.client.discover().resources).count
        _ = try await SuiteSink.prepareResources(server, count: resources - builtIns + 1)
        progress("idle: \(resources) resources")
        let meter = Meter()
        let runtime = try await BridgeRuntime(configuration: configuration, logger: benchLogger(), probe: nil)
        let task = Task { try await runtime.run() }
        try await meter.wait { runtime.supervisor.isSynced }
        try await Task.sleep(for: .seconds(2))
        let started = meter.start()
        try await Task.sleep(for: .seconds(10))
        let (_, cpu) = meter.lap(since: started)
        let watched = runtime.supervisor.watchedResources.count
        let resident = residentBytes()
        let sockets = openSockets()
        let watches = try await server.status()["openWatches"] as? Int ?? -1
        task.cancel()
        _ = try? await task.value
        await server.stop()
        try emit(SuiteRow(sink: "file", scenario: "\(watched) resources, idle", events: 0, rate: 0, peakRSS: resident,
                          note: String(format: "%@ resident, %d KiB per resource; %d open sockets; %d watches at the server; %.3f CPU s in 10 s idle",
                                       mib(resident), (resident - meter.baseline) / max(watched, 1) / 1024, sockets, watches, cpu)))
    }
}
