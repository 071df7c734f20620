import ArgumentParser
import BridgeApp
import BridgeCore
import Foundation
import Logging
import Metrics
import Prometheus

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Bridge every change of the cluster to the configured sinks.",
        discussion: """
            Watches every selected resource and delivers each change as a CloudEvent to every sink, \
            at least once and in order per object. Progress is checkpointed in the state directory, \
            so a restart resumes where the last run stopped. SIGTERM or SIGINT stops it gracefully: \
            the watches stop, the buffered events are delivered, the checkpoint is saved.

            A minimal configuration:

              cluster:
                name: prod-eu
              state:
                directory: /var/lib/kubebridge
              sinks:
                - type: file
                  path: /var/log/kubebridge/events.jsonl

            Examples:
              kubebridge check-config kubebridge.yaml
              kubebridge run --config kubebridge.yaml
            """)

    @Option(name: .long, help: ArgumentHelp("The configuration file (YAML).", valueName: "file"))
    var config: String

    @Option(help: "Log level, overriding the configuration's (trace, debug, info, warning, error).")
    var logLevel: String?

    @Option(help: "Log format, overriding the configuration's (logfmt or json).")
    var logFormat: String?

    func run() async throws {
        let configuration = try loadConfiguration(config)
        guard let format = LogFormat(rawValue: logFormat ?? configuration.logFormat.rawValue) else { throw fail("--log-format: logfmt or json") }
        KubeBridge.bootstrapLogging(level: Logger.Level(rawValue: logLevel ?? configuration.logLevel) ?? .info, format: format)
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
            .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
        ]
        MetricsSystem.bootstrap(factory)
        let logger = Logger(label: "kubebridge")
        let endpoints: OperationsEndpoints?
        do {
            endpoints = try await OperationsEndpoints.bind(configuration, metrics: registry, logger: logger)
        } catch {
            throw fail(describe(error))
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            // For the life of the process, whatever phase it is in.
            if let endpoints { group.addTask { try await endpoints.server.run() } }
            defer { group.cancelAll() }
            try await bridge(configuration, endpoints: endpoints, metrics: registry, logger: logger)
        }
    }

    /// From the first contact with the API server to the end: as the leader elected or alone.
    private func bridge(_ configuration: Configuration, endpoints: OperationsEndpoints?, metrics registry: PrometheusCollectorRegistry,
                        logger: Logger) async throws {
        endpoints?.answerNotReady("connecting to the API server", phase: "starting")
        do {
            try await BridgeRuntime.waitForFirstContact(configuration: configuration, logger: logger) { reason in
                endpoints?.answerNotReady(reason, phase: "starting")
            }
        } catch {
            throw fail(describe(error))
        }
        if let election = configuration.leaderElection {
            logger.info("kubebridge started as \(election.identity): standing by for the lease \(election.namespace)/\(election.name)")
            do {
                try await BridgeRuntime.runElected(configuration: configuration, election: election, logger: logger, metrics: registry,
                                                   endpoints: endpoints, mustStop: Self.stopAtOnce(logger))
            } catch let error as SinkStopped {
                logger.critical("\(error)")
                throw ExitCode(3)
            } catch is CancellationError {
            } catch {
                throw fail(describe(error))
            }
            logger.info("kubebridge stopped")
            return
        }
        let runtime: BridgeRuntime
        do {
            runtime = try await BridgeRuntime(configuration: configuration, logger: logger, metrics: registry, endpoints: endpoints,
                                              mustStop: Self.stopAtOnce(logger))
        } catch {
            throw fail(describe(error))
        }
        logger.info("kubebridge started: \(configuration.sinks.count) sinks, state in \(configuration.stateDirectory)")
        do {
            try await runtime.run()
        } catch let error as SinkStopped {
            logger.critical("\(error)")
            throw ExitCode(3)
        }
        logger.info("kubebridge stopped")
    }
}

extension Run {
    /// Another replica may be bridging already: no drain and no checkpoint, exit code 4; the
    /// next leader resumes from the shared checkpoint.
    static func stopAtOnce(_ logger: Logger) -> @Sendable (any Error) -> Void {
        { error in
            logger.critical("\(error)")
            Foundation.exit(4)
        }
    }
}

struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate a configuration file without running anything.",
        discussion: """
            Prints every problem with its file, line and key, and exits with code 2 if there is one.

            Example:
              kubebridge check-config kubebridge.yaml
            """)

    @Argument(help: ArgumentHelp("The configuration file (YAML).", valueName: "file"))
    var file: String

    func run() async throws {
        do {
            let configuration = try Configuration.load(path: file)
            print("\(file): valid; \(configuration.sinks.count) sink\(configuration.sinks.count == 1 ? "" : "s") (\(configuration.sinks.map(\.name).joined(separator: ", "))), state in \(configuration.stateDirectory)")
        } catch let error as ConfigurationError {
            for problem in error.problems { FileHandle.standardError.write(Data("kubebridge: error: \(problem)\n".utf8)) }
            throw ExitCode(2)
        }
    }
}
