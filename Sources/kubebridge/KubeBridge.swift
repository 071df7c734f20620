import ArgumentParser
import Foundation
import BridgeApp
import KubeAPI
import Logging

@main
struct KubeBridge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kubebridge",
        abstract: "Forward every change of every Kubernetes resource as CloudEvents to Kafka, NATS, webhooks and files.",
        discussion: """
            kubebridge watches every resource the cluster serves, built-in kinds and CRDs alike, and \
            delivers each change once per sink, in order per object, across restarts.

            Start here:
              kubebridge discover                 what the configured cluster serves and kubebridge can watch
              kubebridge demo                     everything against a built-in test API server, no cluster needed
              kubebridge run --config FILE        bridge every change to the configured sinks

            The cluster comes from --kubeconfig, then $KUBECONFIG, then the pod's service account, then ~/.kube/config.
            """,
        subcommands: [Run.self, CheckConfig.self, Status.self, RBAC.self, Discover.self, Demo.self, TestAPIServer.self])

    /// Plain lines for the interactive commands; `run` writes logfmt or JSON.
    static func bootstrapLogging(level: Logger.Level, format: LogFormat? = nil) {
        LoggingSystem.bootstrap { label in
            if let format { return StructuredLogHandler(label: label, format: format, level: level) }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

/// Options that pick the cluster, shared by the commands that talk to one.
struct ClusterOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Path of a kubeconfig file.", valueName: "file"))
    var kubeconfig: String?

    @Option(name: .long, help: ArgumentHelp("Context of the kubeconfig to use (default: its current-context).", valueName: "name"))
    var context: String?

    func load() throws -> KubeClientConfiguration {
        try KubeConfigLoader.load(kubeconfig: kubeconfig, context: context)
    }
}

/// Reads a configuration, or ends the command with every problem on its own line and exit code 2.
func loadConfiguration(_ path: String) throws -> Configuration {
    do {
        return try Configuration.load(path: path)
    } catch let error as ConfigurationError {
        for problem in error.problems { FileHandle.standardError.write(Data("kubebridge: error: \(problem)\n".utf8)) }
        throw ExitCode(2)
    }
}

/// Ends the command with a one-line error and exit code 2: configuration and connection problems
/// are for the user to fix, and a stack trace would not help them.
func fail(_ message: String) -> ExitCode {
    FileHandle.standardError.write(Data("kubebridge: error: \(message)\n".utf8))
    return ExitCode(2)
}

func describe(_ error: Error) -> String {
    switch error {
    case let error as KubeConfigError: return error.message
    case let error as ConfigurationError: return error.problems.joined(separator: "; ")
    case let error as KubeAPIError:
        if error.isUnauthorized {
            return "\(error.request): 401 Unauthorized: the credentials were refused (expired or wrong token?); refresh them in the kubeconfig"
        }
        return error.description
    default: return String(describing: error)
    }
}
