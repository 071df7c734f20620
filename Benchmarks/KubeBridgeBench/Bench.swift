import ArgumentParser
import BridgeCore
import Foundation
import KubeAPI
import KubeInformer
import Logging
import NIOCore
import NIOFoundationCompat

@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kubebridge-bench",
        abstract: "Measurements of kubebridge against a test API server running in its own process.",
        discussion: """
            The test API server runs as a separate process (`kubebridge test-apiserver`), so what is
            measured here is kubebridge's memory alone.

            Examples:
              swift run -c release kubebridge-bench slow-consumer --pending 100000
              swift run -c release kubebridge-bench known-objects --objects 100000
              swift run -c release kubebridge-bench idle-resources --crds 146
              swift run -c release kubebridge-bench file-sink --objects 100000 --rate 1000
              swift run -c release kubebridge-bench kafka-sink --objects 100000 --rate 1000
              swift run -c release kubebridge-bench nats-sink --objects 100000 --rate 1000
            """,
        subcommands: [SlowConsumer.self, KnownObjectsMemory.self, IdleResources.self, FileSinkBench.self, KafkaSinkBench.self, NATSSinkBench.self, WebhookSinkBench.self, KafkaBrokerCommand.self, WebhookReceiverCommand.self, BenchSuite.self, SuiteSink.self, SuiteIdle.self])
}

/// Options shared by the scenarios.
struct ServerOptions: ParsableArguments {
    @Option(help: "Path of the kubebridge binary that runs the test API server (default: next to this one).")
    var kubebridge: String?
}

/// Resident memory of this process, from /proc.
func residentBytes() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let kilobytes = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        return kilobytes * 1024
    }
    return 0
}

func mib(_ bytes: Int) -> String { String(format: "%.1f MiB", Double(bytes) / 1_048_576) }

func benchLogger() -> Logger {
    var logger = Logger(label: "kubebridge.bench")
    logger.logLevel = .warning
    return logger
}

/// A test API server in a child process, driven through its kubeconfig and control API.
final class ServerProcess: Sendable {
    let process: Process
    let kubeconfig: String
    let client: KubeClient
    let directory: URL

    init(binary: String?) async throws {
        let path = binary ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("kubebridge").path
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("kubebridge-bench-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        kubeconfig = directory.appendingPathComponent("kubeconfig").path
        process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["test-apiserver", "--kubeconfig-out", kubeconfig]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        // The server writes the kubeconfig, then announces itself on stdout.
        _ = output.fileHandleForReading.availableData
        var configuration = try KubeConfigLoader.load(kubeconfig: kubeconfig)
        configuration.maxConnections = 2048
        client = try KubeClient(configuration: configuration, logger: benchLogger())
    }

    func control(_ action: String, query: [(String, String)] = []) async throws -> [String: Any] {
        let response = try await client.send(method: .POST, path: "/kubebridge-test/\(action)", query: query)
        return (try JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any]) ?? [:]
    }

    func status() async throws -> [String: Any] {
        let body = try await client.getRaw("/kubebridge-test/status")
        return (try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any]) ?? [:]
    }

    /// Creates `count` ConfigMaps of about `bytes` each on the server, and waits until they exist.
    func generate(count: Int, bytes: Int, namespace: String = "bench", prefix: String = "cm") async throws {
        _ = try await control("generate", query: [("namespace", namespace), ("count", String(count)), ("bytes", String(bytes)), ("prefix", prefix)])
        while try await status()["generating"] as? Bool == true {
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    func stop() async {
        try? await client.shutdown()
        process.terminate()
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: directory)
    }
}
