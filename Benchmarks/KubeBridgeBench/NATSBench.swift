import ArgumentParser
import BridgeApp
import Foundation
import NATSSink

struct NATSSinkBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nats-sink",
        abstract: "Changes of 1 KiB objects through the whole bridge into NATS JetStream (PubAcks awaited): throughput, latency, memory.",
        discussion: "Starts nats-server -js on 127.0.0.1 with its store in a temporary directory, unless --server is given.")

    @OptionGroup var server: ServerOptions

    @OptionGroup var run: SinkRunOptions

    @Option(help: "A NATS server to use instead of starting one, nats://host:port.")
    var nats: String?

    func run() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kubebridge-bench-nats-\(getpid())")
        try? FileManager.default.removeItem(at: directory)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var natsProcess: NATSProcess?
        let url: String
        if let nats {
            url = nats
        } else {
            let process = try NATSProcess(directory: directory.appendingPathComponent("nats"))
            try await process.start()
            natsProcess = process
            url = process.url
        }
        defer { natsProcess?.kill() }
        let server = try await ServerProcess(binary: server.kubebridge)
        try await server.generate(count: run.objects, bytes: 1024)
        var options = NATSSinkOptions(servers: [url])
        options.stream = "BENCH"
        options.createStream = true
        let measured = try await measureBridge(server: server, sink: Configuration.Sink(name: "nats", kind: .nats(options)), objects: run.objects,
                                               rate: run.rate, seconds: run.seconds, stateDirectory: directory.appendingPathComponent("state").path)
        await server.stop()
        print(measured.report(sink: "NATS"))
    }
}
