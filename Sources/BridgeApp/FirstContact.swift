import BridgeCore
import KubeAPI
import KubeModel
import Logging

extension BridgeRuntime {
    /// The first request to the API server, before anything is opened. A server certificate that
    /// does not verify, credentials the server refuses (401) and a credential plugin or token file
    /// that fails are configuration problems: they are thrown, and the command ends with them. A
    /// server that cannot be reached is waited for, since API servers restart: said once, then
    /// retried with backoff until it answers or the process is stopped. Any other answer (403,
    /// 5xx) is left to the watches, which report and retry it. `waiting` hears each failed try's
    /// sentence, for readiness.
    public static func waitForFirstContact(configuration: Configuration, logger: Logger, backoff: Backoff = Backoff(),
                                           clock: some Clock<Duration> = ContinuousClock(),
                                           waiting: @Sendable (String) -> Void = { _ in }) async throws {
        let kubeConfiguration = try KubeConfigLoader.load(kubeconfig: configuration.cluster.kubeconfig, context: configuration.cluster.context)
        let client = try KubeClient(configuration: kubeConfiguration, logger: logger)
        defer { Task { try? await client.shutdown() } }
        var random = SystemRandomNumberGenerator()
        var attempt = 0
        while true {
            do {
                _ = try await client.getRaw("/api")
                if attempt > 0 { logger.info("the API server at \(kubeConfiguration.server) answers; starting") }
                return
            } catch let error as KubeAPIError where error.isUnauthorized || error.code == .tlsVerification || error.code == .credentials {
                throw error
            } catch let error as KubeAPIError where error.code == .transport || error.code == .timeout {
                attempt += 1
                waiting("waiting for the API server: \(error.message)")
                if attempt == 1 {
                    logger.warning("waiting for the API server: \(error.message); trying again with backoff until it answers")
                }
                try await clock.sleep(for: backoff.delay(attempt: attempt, using: &random))
            } catch is KubeAPIError {
                return
            }
        }
    }
}
