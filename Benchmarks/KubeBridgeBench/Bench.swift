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
        subcommands: [SlowConsumer.self, KnownObjectsMemory.self, IdleResources.self, FileSinkBench.self, KafkaSinkBench.self, NATSSinkBench.self, WebhookSinkBench.self, KafkaBrokerCommand.self, WebhookReceiverCommand.self, BenchSuite.self, SuiteSink.self, SuiteIdle.self, BareWatchCommand.self])
}

/// Options shared by the scenarios.
struct ServerOptions: ParsableArguments {
    @Option(help: "Path of the kubebridge binary that runs the test API server (default: next to this one).")
    var kubebridge: String?
}

/// Resident memory of this process, from /proc.
/// This process's resident size, from `/proc/self/statm` (resident pages, the second number):
/// read with two system calls and no Foundation, since the suite samples it every 20 ms while it
/// measures the bridge's CPU in the same process.
func residentBytes() -> Int {
    let descriptor = open("/proc/self/statm", O_RDONLY)
    guard descriptor >= 0 else { return 0 }
    defer { close(descriptor) }
    return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 128) { buffer in
        let count = read(descriptor, buffer.baseAddress, buffer.count)
        guard count > 0 else { return 0 }
        var fields = buffer[..<count].split(separator: UInt8(ascii: " "), maxSplits: 2)
        guard fields.count >= 2 else { return 0 }
        fields.removeFirst()
        let pages = fields[0].reduce(0) { $1 >= UInt8(ascii: "0") && $1 <= UInt8(ascii: "9") ? $0 * 10 + Int($1 - UInt8(ascii: "0")) : $0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
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
