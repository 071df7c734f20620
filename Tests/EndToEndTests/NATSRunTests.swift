import Foundation
import KubeTestServer
import Testing
import TestSupport

@Suite("kubebridge run into NATS JetStream, as a process")
struct NATSRunTests {
    @Test("into nats-server -js and a file at once, SIGKILLed five times under churn: the stream holds every change once, in order per object")
    func crashesIntoNATS() async throws {
        let nats = try await NATSServer.start()
        let server = try await RunCommandTests.server(history: true)
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let bridge = try BridgeProcess(server: server, directory: directory, extraSinks: """
              - type: nats
                name: nats
                servers: [\(nats.url)]
                stream: KUBE
                createStream: true
                batch: {linger: 1ms}
            """)
        let (history, finalVersion) = try await CrashRun.run(server: server, bridge: bridge, kills: 5, alive: 600...1500)
        func delivered() async throws -> [DeliveryAudit.Delivered] {
            try await JetStreamReader.read(url: nats.url, stream: "KUBE").compactMap { DeliveryAudit.Delivered(attributes: $0.cloudEventAttributes) }
        }
        try await waitUntil(timeout: .seconds(60), interval: .seconds(1)) {
            try await delivered().contains { $0.resourceVersion == finalVersion }
        }
        #expect(await bridge.stop() == 0)
        let events = try await delivered()
        let fileEvents = bridge.events().compactMap { DeliveryAudit.Delivered($0) }
        let (audit, fileAudit) = DeliveryAudit.pair(events, file: fileEvents, history: history)
        #expect(audit.missing.isEmpty, "missing in the stream: \(audit.missing.prefix(20))")
        #expect(fileAudit.missing.isEmpty, "missing in the file: \(fileAudit.missing.prefix(20))")
        #expect(audit.disorder.isEmpty, "out of order: \(audit.disorder.prefix(20))")
        #expect(audit.duplicates == 0, "Nats-Msg-Id lets the server drop what a restart sends again")
        print("nats crash test: \(history.count) changes made, \(events.count) messages, \(audit.duplicates) duplicates, \(audit.missing.count) missing")
        try await server.stop()
        await nats.stop()
    }

    @Test("a missing stream: exit code 2 and one line naming it")
    func missingStream() async throws {
        let nats = try await NATSServer.start()
        let server = try await RunCommandTests.server()
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let bridge = try BridgeProcess(server: server, directory: directory, extraSinks: "  - type: nats\n    servers: [\(nats.url)]\n    stream: ABSENT")
        let result = try await KubeBridgeBinary.run(["run", "--config", bridge.configPath])
        #expect(result.status == 2, "exit \(result.status): \(result.stderr)")
        #expect(result.stderr.contains("the JetStream stream ABSENT does not exist"), "\(result.stderr)")
        try await server.stop()
        await nats.stop()
    }

    @Test("NATS down when kubebridge starts: a warning, events wait, and they arrive once the server is up")
    func serverDownAtStart() async throws {
        let nats = try NATSServer.prepare()
        let server = try await RunCommandTests.server()
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        for name in ["a", "b"] {
            let (status, _) = try await server.perform("POST", "/api/v1/namespaces/default/configmaps",
                                                       body: #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"\#(name)"}}"#)
            #expect(status == 201)
        }
        let bridge = try BridgeProcess(server: server, directory: directory, include: ["core/v1/configmaps"], extraSinks: """
              - type: nats
                servers: [\(nats.url)]
                stream: KUBE
                createStream: true
                retry: {initial: 100ms, maximum: 500ms}
            """)
        try bridge.start()
        do {
            try await waitUntil(timeout: .seconds(120)) { bridge.logText.contains("cannot be reached yet") }
        } catch {
            Issue.record("no warning that NATS cannot be reached; the log:\n\(bridge.logText.suffix(3000))")
            throw error
        }
        try await Task.sleep(for: .seconds(1))
        try await nats.run()
        try await waitUntil(timeout: .seconds(120), interval: .milliseconds(500)) {
            (try? await JetStreamReader.read(url: nats.url, stream: "KUBE").count) == 2
        }
        #expect(await bridge.stop() == 0)
        try await server.stop()
        await nats.stop()
    }
}
