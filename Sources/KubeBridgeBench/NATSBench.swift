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
        var natsProcess: Process?
        let url: String
        if let nats {
            url = nats
        } else {
            let port = 14_222 + Int(getpid() % 1000)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: ["/usr/sbin/nats-server", "/usr/bin/nats-server"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "nats-server")
            process.arguments = ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", directory.appendingPathComponent("nats").path]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            natsProcess = process
            url = "nats://127.0.0.1:\(port)"
            try await Task.sleep(for: .milliseconds(500))
        }
        defer { if let natsProcess { kill(natsProcess.processIdentifier, SIGKILL) } }
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
