import BridgeCore
import Foundation
import KubeAPI
import KubeModel
import KubeTestServer
import NATSSink
import Synchronization
import Testing
import TestSupport

@Suite("NATS subject tokens")
struct SubjectTokenTests {
    @Test("Kubernetes names become one token each, reversibly; ordinary names stay as they are", arguments: [
        ("networking.k8s.io", "networking%2Ek8s%2Eio"), ("kube-system", "kube-system"), ("my.config.v2", "my%2Econfig%2Ev2"),
        ("100%", "100%25"), ("a*b>c", "a%2Ab%3Ec"), ("with space", "with%20space"), ("ünï", "%C3%BCn%C3%AF"), ("_", "_"),
    ])
    func escaping(name: String, token: String) {
        #expect(SubjectToken.escape(name) == token)
        #expect(SubjectToken.unescape(token) == name)
        #expect(!token.contains(".") && !token.contains("*") && !token.contains(">") && !token.contains(" "))
    }

    @Test("a stream's subject filter covers a template's pattern by NATS' token rules", arguments: [
        ("kube.>", "kube.*.*.*.*.*", true), (">", "kube.*.*", true), ("kube.*.*.*.*.*", "kube.*.*.*.*.*", true),
        ("kube.apps.>", "kube.*.*.*.*.*", false), ("kube.*.*", "kube.*.*.*", false), ("kube.*.*.*", "kube.*.*", false), ("other.>", "kube.*", false),
    ])
    func covering(filter: String, pattern: String, covered: Bool) {
        #expect(SubjectToken.filter(filter, covers: pattern) == covered)
    }

    @Test("templates: placeholders are whole tokens, literals are valid tokens")
    func templates() throws {
        var options = NATSSinkOptions(servers: ["nats://127.0.0.1:4222"])
        try options.validate()
        #expect(options.streamSubjects == ["kube.*.*.*.*.*"])
        for bad in ["kube.{group}-x", "kube..{name}", "kube.{owner}", "kube.a b"] {
            options.subject = bad
            #expect(throws: (any Error).self, "\(bad)") { try options.validate() }
        }
    }
}

@Suite("NATS JetStream sink against nats-server -js")
struct NATSSinkTests {
    static let ingresses = WatchScope(GroupVersionResource("networking.k8s.io/v1/ingresses")!)

    static func options(_ server: NATSServer, stream: String = "KUBE", mode: ContentMode = .binary) -> NATSSinkOptions {
        var options = NATSSinkOptions(servers: [server.url])
        options.stream = stream
        options.createStream = true
        options.mode = mode
        return options
    }

    @Test("binary and structured mode: subjects escape names with dots, headers carry the attributes and Nats-Msg-Id, order holds per object",
          arguments: NATSSinkOptions.modes)
    func roundTrip(mode: ContentMode) async throws {
        let server = try await NATSServer.start()
        var ledger = DeliveryLedger(sinkCount: 1)
        let events = try SampleEvents.make(scope: Self.ingresses, kind: "Ingress", namespace: "kube-system", names: ["web.example.com", "api"],
                                           changes: 3, ledger: &ledger)
        let sink = try await NATSSink.ready(options: Self.options(server, mode: mode))
        let outcomes = await sink.deliver(events)
        #expect(outcomes == Array(repeating: .delivered, count: events.count))
        try await sink.close()

        let messages = try await JetStreamReader.read(url: server.url, stream: "KUBE")
        #expect(messages.count == events.count)
        #expect(messages.map { $0.headers["Nats-Msg-Id"] } == events.map { $0.envelope.id })
        #expect(Set(messages.map(\.subject)) == [
            "kube.networking%2Ek8s%2Eio.v1.ingresses.kube-system.web%2Eexample%2Ecom", "kube.networking%2Ek8s%2Eio.v1.ingresses.kube-system.api",
        ])
        for message in messages {
            let tokens = message.subject.split(separator: ".")
            #expect(SubjectToken.unescape(String(tokens[1])) == "networking.k8s.io")
            switch mode {
            case .binary:
                #expect(message.headers["content-type"] == "application/json")
                #expect(message.headers["ce-specversion"] == "1.0")
                #expect(message.headers["ce-id"] == message.headers["Nats-Msg-Id"])
                #expect(message.headers["ce-type"]?.hasPrefix("io.kubebridge.networking.k8s.io.v1.ingresses.") == true)
                #expect(message.headers["ce-partitionkey"] != nil)
                #expect(message.data.hasPrefix(#"{"kind":"Ingress""#))
            case .structured:
                #expect(message.headers["content-type"] == "application/cloudevents+json; charset=UTF-8")
                let event = try JSONSerialization.jsonObject(with: Data(message.data.utf8)) as? [String: Any]
                #expect(event?["specversion"] as? String == "1.0")
                #expect(event?["id"] as? String == message.headers["Nats-Msg-Id"])
            case .batch:
                Issue.record("the NATS binding has no batch mode")
            }
        }
        for name in ["web%2Eexample%2Ecom", "api"] {
            let versions = messages.filter { $0.subject.hasSuffix(".\(name)") }.compactMap { $0.headers["Nats-Msg-Id"]?.split(separator: "/").last.flatMap { Int($0) } }
            #expect(versions == versions.sorted() && versions.count == 3, "\(name): \(versions)")
        }
        await server.stop()
    }

    @Test("a batch delivered again after a crash is acknowledged and dropped by the server as duplicates: the stream holds each change once")
    func deduplication() async throws {
        let server = try await NATSServer.start()
        var ledger = DeliveryLedger(sinkCount: 1)
        let events = try SampleEvents.make(scope: Self.ingresses, kind: "Ingress", namespace: "web", names: ["a", "b", "c"], changes: 2, ledger: &ledger)
        let first = try await NATSSink.ready(options: Self.options(server))
        #expect(await first.deliver(events) == Array(repeating: .delivered, count: events.count))
        try await first.close()
        let second = try await NATSSink.ready(options: Self.options(server))
        #expect(await second.deliver(events) == Array(repeating: .delivered, count: events.count))
        try await second.close()
        let messages = try await JetStreamReader.read(url: server.url, stream: "KUBE")
        #expect(messages.count == events.count)
        await server.stop()
    }

    @Test("a stream kubebridge creates has the configured retention; an existing one that differs gets a warning; one that does not take the subjects is a clear error")
    func streamChecks() async throws {
        let server = try await NATSServer.start()
        var options = Self.options(server, stream: "WORK")
        options.retention = .workqueue
        let sink = try await NATSSink.ready(options: options)
        try await sink.close()
        let info = try await ProcessRunner.runBinary("/usr/bin/env", ["python3", "-c", """
            import asyncio, sys, nats
            async def main():
                nc = await nats.connect(sys.argv[1])
                info = await nc.jetstream().stream_info("WORK")
                print(getattr(info.config.retention, "value", info.config.retention), info.config.subjects, info.config.duplicate_window)
                await nc.close()
            asyncio.run(main())
            """, server.url], timeout: 30)
        #expect(String(decoding: info.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) == "workqueue ['kube.*.*.*.*.*'] 120.0",
                "\(String(decoding: info.stderr, as: UTF8.self))")
        let logs = CapturedLogs()
        let differing = try await NATSSink(options: Self.options(server, stream: "WORK"), logger: logs.logger)
        try await differing.close()
        #expect(logs.messages.contains { $0.contains("exists with retention workqueue (configured limits)") }, "\(logs.messages)")
        var other = Self.options(server, stream: "WORK")
        other.subject = "events.{resource}"
        other.createStream = false
        let error = await #expect(throws: (any Error).self) { _ = try await NATSSink.ready(options: other) }
        #expect("\(error.map { "\($0)" } ?? "")".contains("does not take the subjects events.*"))
        await server.stop()
    }

    @Test("TLS: with the server's CA the sink publishes; without it, connecting fails and says so")
    func tls() async throws {
        let server = try await NATSServer.start(tls: true)
        var options = Self.options(server)
        options.caFile = server.caFile
        var ledger = DeliveryLedger(sinkCount: 1)
        let events = try SampleEvents.make(scope: Self.ingresses, kind: "Ingress", namespace: "web", names: ["a"], changes: 2, ledger: &ledger)
        let sink = try await NATSSink.ready(options: options)
        #expect(await sink.deliver(events) == [.delivered, .delivered])
        try await sink.close()
        var untrusted = Self.options(server)
        untrusted.caFile = try TestPKI().caCertificatePEM.write(to: server.storeDirectory.appendingPathComponent("other-ca.pem"))
        let error = await #expect(throws: (any Error).self) { _ = try await NATSSink(options: untrusted) }
        #expect("\(error.map { "\($0)" } ?? "")".contains("SSL"), "\(error.map { "\($0)" } ?? "")")
        await server.stop()
    }

    @Test("nkeys: the public key is derived from the seed (the NATS documentation's pair), and a server that knows only that key takes the sink's messages")
    func nkey() async throws {
        let seed = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY"
        let publicKey = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"
        #expect(try NKey.userPublicKey(seed: seed) == publicKey)
        #expect(throws: (any Error).self) { try NKey.userPublicKey(seed: "SUACSSL3UAHUDXKFSNVUZRG5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY") }
        let server = try await NATSServer.start(nkey: publicKey)
        let seedFile = server.storeDirectory.appendingPathComponent("user.nk")
        try "\(seed)\n".write(to: seedFile, atomically: true, encoding: .utf8)
        var options = Self.options(server)
        options.nkeySeedFile = seedFile.path
        var ledger = DeliveryLedger(sinkCount: 1)
        let events = try SampleEvents.make(scope: Self.ingresses, kind: "Ingress", namespace: "web", names: ["a"], changes: 2, ledger: &ledger)
        let sink = try await NATSSink.ready(options: options)
        #expect(await sink.deliver(events) == [.delivered, .delivered])
        try await sink.close()
        let anonymous = await #expect(throws: (any Error).self) { _ = try await NATSSink(options: Self.options(server)) }
        #expect("\(anonymous.map { "\($0)" } ?? "")".lowercased().contains("author"), "\(anonymous.map { "\($0)" } ?? "")")
        await server.stop()
    }

    /// A server that takes only the NATS documentation's user nkey, behind a proxy that gives the
    /// `refused`th connection a nonce whose signature by that seed starts with 0x00 (nats.c 3.4.1
    /// then sends the nkey alone); and a sink's options through the proxy with the seed.
    static func nkeyServerBehindNonceProxy(refused: Int) async throws -> (NATSServer, NonceProxy, NATSSinkOptions) {
        let seed = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY"
        let server = try await NATSServer.start(nkey: try NKey.userPublicKey(seed: seed))
        let proxy = try await NonceProxy.start(upstream: server.port, nonce: "4JOvqtS6Q4-s4oY", refused: refused)
        let seedFile = server.storeDirectory.appendingPathComponent("user.nk")
        try "\(seed)\n".write(to: seedFile, atomically: true, encoding: .utf8)
        var options = options(server)
        options.servers = [proxy.url]
        options.nkeySeedFile = seedFile.path
        return (server, proxy, options)
    }

    @Test("nkeys: a signature refused at the first connection (nats.c 3.4.1 leaves out one in 256, those that start with a zero byte) is made again on a new connection")
    func nkeyRefusedOnce() async throws {
        let (server, proxy, options) = try await Self.nkeyServerBehindNonceProxy(refused: 1)
        var ledger = DeliveryLedger(sinkCount: 1)
        let events = try SampleEvents.make(scope: Self.ingresses, kind: "Ingress", namespace: "web", names: ["a"], changes: 2, ledger: &ledger)
        let sink = try await NATSSink.ready(options: options)
        #expect(await sink.deliver(events) == [.delivered, .delivered])
        try await sink.close()
        #expect(proxy.connections >= 2, "the refused connection, then the one that worked")
        await proxy.stop()
        await server.stop()
    }

    @Test("a missing stream is a clear error at start unless createStream is set")
    func missingStream() async throws {
        let server = try await NATSServer.start()
        var options = Self.options(server, stream: "ABSENT")
        options.createStream = false
        let error = await #expect(throws: (any Error).self) { _ = try await NATSSink.ready(options: options) }
        #expect("\(error.map { "\($0)" } ?? "")".contains("ABSENT"))
        await server.stop()
    }
}

@Suite("NATS JetStream sink under server faults")
struct NATSFaultTests {
    /// What the pipeline does: sends again what was not confirmed, in order, until it is (or 30
    /// rounds 200 ms apart); the last outcomes of what was sent last.
    static func deliverAgain(_ events: [OutboundEvent], after outcomes: [DeliveryOutcome], to sink: NATSSink) async throws -> [DeliveryOutcome] {
        var remaining = events
        var outcomes = outcomes
        var rounds = 0
        while outcomes.contains(where: { $0 != .delivered }), rounds < 30 {
            remaining = zip(remaining, outcomes).filter { $0.1 != .delivered }.map(\.0)
            try await Task.sleep(for: .milliseconds(200))
            outcomes = await sink.deliver(remaining)
            rounds += 1
        }
        return outcomes
    }

    @Test("nats-server killed mid-run and started again on the same store: nothing is acknowledged while it is away, and after retries every change is in the stream once")
    func serverRestart() async throws {
        let server = try await NATSServer.start()
        var ledger = DeliveryLedger(sinkCount: 1)
        let events = try SampleEvents.make(scope: NATSSinkTests.ingresses, kind: "Ingress", namespace: "web", names: (0..<20).map { "i-\($0)" },
                                           changes: 5, ledger: &ledger)
        let sink = try await NATSSink.ready(options: NATSSinkTests.options(server))
        let half = events.count / 2
        #expect(await sink.deliver(Array(events[..<half])) == Array(repeating: .delivered, count: half))
        await server.kill()
        let finishedEarly = Mutex(false)
        let pending = Task {
            let outcomes = await sink.deliver(Array(events[half...]))
            finishedEarly.withLock { $0 = outcomes.contains(.delivered) }
            return outcomes
        }
        try await Task.sleep(for: .seconds(1))
        #expect(!finishedEarly.withLock { $0 }, "nothing is confirmed while the server is away")
        try await server.run()
        let outcomes = try await Self.deliverAgain(Array(events[half...]), after: await pending.value, to: sink)
        #expect(outcomes.allSatisfy { $0 == .delivered })
        try await sink.close()
        let messages = try await JetStreamReader.read(url: server.url, stream: "KUBE")
        #expect(Set(messages.compactMap { $0.headers["Nats-Msg-Id"] }) == Set(events.map(\.envelope.id)))
        #expect(messages.count == events.count, "each change once: resent ones were dropped as duplicates")
        // In the stream's order, each object's changes come in the order they were made.
        var last: [String: Int] = [:]
        for message in messages {
            guard let id = message.headers["Nats-Msg-Id"], let slash = id.lastIndex(of: "/"), let version = Int(id[id.index(after: slash)...]) else { continue }
            let object = String(id[..<slash])
            #expect(version > last[object, default: 0], "\(object): \(version) stored after \(last[object, default: 0])")
            last[object] = version
        }
        await server.stop()
    }

    @Test("with an nkey, a reconnection refused for its signature (nats.c leaves out one in 256) is followed by another, and delivery goes on")
    func nkeyReconnectionRefused() async throws {
        // The first connection works, the first reconnection is refused.
        let (server, proxy, options) = try await NATSSinkTests.nkeyServerBehindNonceProxy(refused: 2)
        var ledger = DeliveryLedger(sinkCount: 1)
        let events = try SampleEvents.make(scope: NATSSinkTests.ingresses, kind: "Ingress", namespace: "web", names: ["a", "b"], changes: 3, ledger: &ledger)
        let sink = try await NATSSink.ready(options: options)
        #expect(await sink.deliver(Array(events[..<3])) == Array(repeating: .delivered, count: 3))
        await server.kill()
        try await server.run()
        let outcomes = try await Self.deliverAgain(Array(events[3...]), after: await sink.deliver(Array(events[3...])), to: sink)
        #expect(outcomes.allSatisfy { $0 == .delivered }, "\(outcomes)")
        #expect(proxy.connections >= 3, "the first connection, the refused reconnection, the one after it")
        try await sink.close()
        await proxy.stop()
        await server.stop()
    }

    @Test("a full stream (max_msgs with discard new) refuses with the server's words; those events stay unconfirmed, so the checkpoint holds")
    func fullStream() async throws {
        let server = try await NATSServer.start()
        let created = try await ProcessRunner.runBinary("/usr/bin/env", ["python3", "-c", """
            import asyncio, sys, nats
            from nats.js.api import StreamConfig, DiscardPolicy
            async def main():
                nc = await nats.connect(sys.argv[1])
                await nc.jetstream().add_stream(StreamConfig(name="FULL", subjects=["kube.>"], max_msgs=5, discard=DiscardPolicy.NEW))
                await nc.close()
            asyncio.run(main())
            """, server.url], timeout: 30)
        #expect(created.status == 0, "\(String(decoding: created.stderr, as: UTF8.self))")
        var options = NATSSinkTests.options(server, stream: "FULL")
        options.createStream = false
        var ledger = DeliveryLedger(sinkCount: 1)
        let events = try SampleEvents.make(scope: NATSSinkTests.ingresses, kind: "Ingress", namespace: "web", names: (0..<10).map { "i-\($0)" },
                                           changes: 1, ledger: &ledger)
        let sink = try await NATSSink.ready(options: options)
        let outcomes = await sink.deliver(events)
        #expect(outcomes.prefix(5).allSatisfy { $0 == .delivered })
        let refusals = outcomes.dropFirst(5)
        #expect(refusals.count == 5)
        for outcome in refusals {
            guard case .retriable(let reason) = outcome else {
                Issue.record("expected a retriable refusal, got \(outcome)")
                continue
            }
            #expect(reason.contains("JetStream refused it") && reason.lowercased().contains("maximum messages"), "\(reason)")
        }
        try await sink.close()
        await server.stop()
    }
}

extension String {
    /// Writes the text to `url` and returns its path.
    func write(to url: URL) throws -> String {
        try write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }
}

extension NATSSink {
    /// A sink connected and with its stream checked: what the pipeline would wait for with retries.
    static func ready(options: NATSSinkOptions) async throws -> NATSSink {
        let sink = try await NATSSink(options: options)
        try await sink.waitUntilReady(timeout: .seconds(30))
        return sink
    }
}
