import Foundation
import KubeAPI

/// Runs the built `kubebridge` binary as a user would, and captures what it prints.
extension ProcessRunner {
    /// Runs a built binary with the environment of the tests.
    package static func runBinary(_ path: String, _ arguments: [String], timeout: TimeInterval) async throws -> ProcessRunner.Result {
        try await run(path, arguments: arguments, environment: ProcessInfo.processInfo.environment, timeout: timeout)
    }
}

public enum KubeBridgeBinary {
    public struct Result: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// The binary next to the test bundle (`swift build` puts both in the same folder).
    public static var path: String {
        if let override = ProcessInfo.processInfo.environment["KUBEBRIDGE_BINARY"] { return override }
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        return bundle.appendingPathComponent("kubebridge").path
    }

    public static func run(_ arguments: [String], environment: [String: String] = [:], timeout: TimeInterval = 60) async throws -> Result {
        var env = ProcessInfo.processInfo.environment
        env["KUBECONFIG"] = nil
        env["KUBERNETES_SERVICE_HOST"] = nil
        for (key, value) in environment { env[key] = value }
        let result = try await ProcessRunner.run(path, arguments: arguments, environment: env, timeout: timeout)
        return Result(status: result.status, stdout: String(decoding: result.stdout, as: UTF8.self),
                      stderr: String(decoding: result.stderr, as: UTF8.self))
    }
}
