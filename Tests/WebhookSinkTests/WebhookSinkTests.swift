import BridgeCore
import Foundation
import KubeAPI
import KubeModel
import KubeTestServer
import Logging
import NIOCore
import Testing
import TestSupport
@testable import WebhookSink

@Suite("Webhook sink pieces")
struct WebhookPieceTests {
    @Test("responses: 2xx delivers; 429/503 wait for Retry-After; 408, 409 and 5xx retry; 401/403 are the credentials; 413 may split; other 4xx are for good",
          arguments: [
              (200, nil, ResponseVerdict.delivered), (204, nil, .delivered),
              (503, "3", .retry("HTTP 503: busy", after: .seconds(3))), (429, nil, .retry("HTTP 429: busy", after: nil)),
              (503, "Wed, 25 Nov 2026 10:00:05 GMT", .retry("HTTP 503: busy", after: .seconds(5))),
              (408, nil, .retry("HTTP 408: busy", after: nil)), (409, nil, .retry("HTTP 409: busy", after: nil)),
              (502, nil, .retry("HTTP 502: busy", after: nil)), (401, nil, .unauthorized("HTTP 401: busy")),
              (413, nil, .tooLarge("HTTP 413: busy")), (400, nil, .permanent("HTTP 400: busy")), (404, nil, .permanent("HTTP 404: busy")),
              (301, nil, .permanent("HTTP 301: busy")),
          ] as [(Int, String?, ResponseVerdict)])
    func verdicts(status: Int, retryAfter: String?, expected: ResponseVerdict) {
        let now = Date(timeIntervalSince1970: 1_795_600_800)  // Wed, 25 Nov 2026 10:00:00 GMT
        #expect(ResponseVerdict(status: status, retryAfter: retryAfter, body: "busy\n", now: now) == expected)
    }

    @Test("header values are percent-encoded as the CloudEvents HTTP binding says: space, quote, percent and non-ASCII only")
    func headerEncoding() {
        #expect(WebhookMessage.percentEncoded("namespaces/kube-system/pods/web-1") == "namespaces/kube-system/pods/web-1")
        #expect(WebhookMessage.percentEncoded("a b\"c%d€") == "a%20b%22c%25d%E2%82%AC")
    }

    @Test("signatures: the Standard Webhooks test vector")
    func signature() throws {
        // From the scheme's reference libraries' tests.
        let signer = try WebhookSigner(secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        let body = ByteBuffer(string: #"{"test": 2432232314}"#)
        #expect(signer.signature(id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1614265330, body: body)
            == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        #expect(throws: WebhookError.self) { try WebhookSigner(secret: "whsec_not base64!") }
    }

    @Test("options: a url with a scheme and host, header names that are tokens, values without line breaks")
    func validation() {
        for url in ["ftp://x", "localhost:8080", "http://", ""] {
            #expect(throws: WebhookError.self, "\(url)") { try WebhookSinkOptions(url: url).validate() }
        }
        var options = WebhookSinkOptions(url: "https://hooks.example.com/k8s")
        options.headers = [("X Bad", "v")]
        #expect(throws: WebhookError.self) { try options.validate() }
        options.headers = [("X-Good", "a\r\nInjected: yes")]
        #expect(throws: WebhookError.self) { try options.validate() }
    }
}

@Suite("Webhook sink against a real HTTP receiver")
struct WebhookSinkTests {
    static let scope = WatchScope(GroupVersionResource("apps/v1/deployments")!)
    static let secret = "whsec_" + Data("kubebridge-test-signing-secret".utf8).base64EncodedString()

    static func events(objects: Int = 4, changes: Int = 3) throws -> [OutboundEvent] {
        var ledger = DeliveryLedger(sinkCount: 1)
        return try SampleEvents.make(scope: scope, kind: "Deployment", namespace: "kube-system", names: (0..<objects).map { "web.\($0)" },
                                     changes: changes, ledger: &ledger)
    }

    static func options(_ receiver: WebhookReceiver, mode: ContentMode = .binary) throws -> WebhookSinkOptions {
        var options = WebhookSinkOptions(url: receiver.url)
        options.mode = mode
        options.signingSecret = receiver.secret
        options.retry = Backoff(initial: .milliseconds(20), maximum: .milliseconds(100))
        options.timeout = .seconds(2)
        return options
    }

    /// The first arrival of each id, grouped by object: what order a consumer sees.
    static func firstArrivals(_ received: [[String: Any]]) -> [String: [String]] {
        var seen: Set<String> = []
        var byObject: [String: [String]] = [:]
        for event in received {
            guard let id = event["id"] as? String, seen.insert(id).inserted else { continue }
            byObject[event["partitionkey"] as? String ?? "", default: []].append(id)
        }
        return byObject
    }

    static func expectOrdered(_ received: [[String: Any]], _ events: [OutboundEvent], sourceLocation: SourceLocation = #_sourceLocation) {
        let expected = Dictionary(grouping: events, by: \.envelope.partitionKey).mapValues { $0.map(\.envelope.id) }
        #expect(firstArrivals(received) == expected, sourceLocation: sourceLocation)
    }

    @Test("binary, structured and batch mode, signed and with a bearer token: every event parses with the CloudEvents SDK, attributes intact",
          arguments: ContentMode.allCases)
    func roundTrip(mode: ContentMode) async throws {
        let receiver = try await WebhookReceiver.start(secret: Self.secret, token: "s3cret-token")
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let tokenFile = directory.appendingPathComponent("token").path
        try "s3cret-token\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        var options = try Self.options(receiver, mode: mode)
        // The count below is exact: a request resent after a timeout (a loaded machine's) would arrive twice.
        options.timeout = .seconds(60)
        options.bearerTokenFile = tokenFile
        options.batchMaxEvents = 5
        options.headers = [("X-Cluster", "test")]
        let events = try Self.events()
        let sink = try WebhookSink(options: options)
        #expect(await sink.deliver(events) == Array(repeating: .delivered, count: events.count))
        try await sink.close()

        let stats = try await receiver.stats()
        #expect(stats.badSignatures == 0 && stats.badTokens == 0 && stats.parseErrors == 0)
        #expect(stats.modes.keys.sorted() == [mode.rawValue])
        if mode == .batch { #expect(stats.requests >= 3 && stats.requests < events.count, "\(stats.requests) requests") }
        let received = receiver.events()
        #expect(received.count == events.count)
        Self.expectOrdered(received, events)
        let byID = Dictionary(uniqueKeysWithValues: events.map { ($0.envelope.id, $0.envelope) })
        for event in received {
            let envelope = try #require(byID[event["id"] as? String ?? ""])
            #expect(event["type"] as? String == envelope.type)
            #expect(event["source"] as? String == envelope.source)
            #expect(event["subject"] as? String == envelope.subject)
            #expect(event["specversion"] as? String == "1.0")
            #expect(event["datacontenttype"] as? String == "application/json")
            #expect(event["changetype"] as? String == (envelope.extensions.first { $0.name == "changetype" }?.value))
            #expect(event["_name"] as? String == (envelope.extensions.first { $0.name == "name" }?.value))
            let webhookID = event["_webhook_id"] as? String ?? ""
            #expect(mode == .batch ? webhookID.hasPrefix("batch_") : webhookID == envelope.id)
        }
        await receiver.stop()
    }

    @Test("503 with Retry-After: every lane waits as long as the receiver asked, then everything arrives once, in order")
    func retryAfter() async throws {
        let receiver = try await WebhookReceiver.start()
        try await receiver.script([.status(503, retryAfter: "1", body: "maintenance")])
        let events = try Self.events()
        let sink = try WebhookSink(options: try Self.options(receiver))
        let started = ContinuousClock.now
        #expect(await sink.deliver(events) == Array(repeating: .delivered, count: events.count))
        #expect(started.duration(to: .now) >= .milliseconds(950))
        try await sink.close()
        let stats = try await receiver.stats()
        #expect(stats.statuses["503"] == 1)
        #expect(receiver.events().count == events.count)
        Self.expectOrdered(receiver.events(), events)
        await receiver.stop()
    }

    @Test("5xx, dropped connections and answers slower than the timeout are retried: everything arrives, first arrivals in order")
    func transientFailures() async throws {
        let receiver = try await WebhookReceiver.start()
        try await receiver.script([.status(500, times: 3), .drop(times: 3), .delay(1.5, times: 2), .status(502, times: 2)])
        let events = try Self.events(objects: 6, changes: 4)
        var options = try Self.options(receiver)
        options.timeout = .milliseconds(500)
        let sink = try WebhookSink(options: options)
        #expect(await sink.deliver(events) == Array(repeating: .delivered, count: events.count))
        try await sink.close()
        let received = receiver.events()
        #expect(Set(received.compactMap { $0["id"] as? String }) == Set(events.map(\.envelope.id)))
        Self.expectOrdered(received, events)
        await receiver.stop()
    }

    @Test("a 4xx is for good: that event is rejected with the status and the body's first bytes; the object's later changes still go")
    func permanent() async throws {
        let receiver = try await WebhookReceiver.start()
        try await receiver.script([.status(422, body: "spec.replicas: must be positive")])
        let events = try Self.events(objects: 1, changes: 3)
        let sink = try WebhookSink(options: try Self.options(receiver))
        let outcomes = await sink.deliver(events)
        #expect(outcomes == [.rejected("HTTP 422: spec.replicas: must be positive"), .delivered, .delivered])
        try await sink.close()
        #expect(receiver.events().compactMap { $0["id"] as? String } == events.dropFirst().map(\.envelope.id))
        await receiver.stop()
    }

    @Test("413 on a batch: it goes again in halves; a single event too large is rejected")
    func tooLarge() async throws {
        let receiver = try await WebhookReceiver.start()
        try await receiver.script([.status(413, body: "too big", times: 2)])
        let events = try Self.events(objects: 1, changes: 8)
        var options = try Self.options(receiver, mode: .batch)
        options.batchMaxEvents = 8
        let sink = try WebhookSink(options: options)
        #expect(await sink.deliver(events) == Array(repeating: .delivered, count: events.count))
        #expect(receiver.events().compactMap { $0["id"] as? String } == events.map(\.envelope.id))
        try await receiver.script([.status(413, body: "too big")])
        var binary = try Self.options(receiver)
        binary.mode = .structured
        let single = try WebhookSink(options: binary)
        #expect(await single.deliver(Array(events.prefix(1))) == [.rejected("HTTP 413: too big")])
        try await sink.close()
        try await single.close()
        await receiver.stop()
    }

    @Test("many requests in flight, never two of one object at once")
    func perObjectOrder() async throws {
        let receiver = try await WebhookReceiver.start()
        try await receiver.script([.hold(0.05, times: 1000)])
        let events = try Self.events(objects: 12, changes: 5)
        var options = try Self.options(receiver)
        options.concurrency = 8
        let sink = try WebhookSink(options: options)
        #expect(await sink.deliver(events) == Array(repeating: .delivered, count: events.count))
        try await sink.close()
        let stats = try await receiver.stats()
        #expect(stats.overlaps == 0)
        #expect(stats.maxInFlight > 1, "requests went one at a time")
        Self.expectOrdered(receiver.events(), events)
        await receiver.stop()
    }

    @Test("the receiver down beyond the retry window: the events go back to the pipeline unconfirmed; once it is up they arrive")
    func receiverDown() async throws {
        let receiver = try await WebhookReceiver.start()
        await receiver.kill()
        let events = try Self.events(objects: 2, changes: 2)
        var options = try Self.options(receiver)
        options.retryWindow = .milliseconds(300)
        let sink = try WebhookSink(options: options)
        let outcomes = await sink.deliver(events)
        #expect(outcomes.allSatisfy { if case .retriable = $0 { true } else { false } }, "\(outcomes)")
        try await sink.close()
        try await receiver.run()
        // Sent again as the pipeline would, by a sink whose window does not depend on how soon a
        // busy machine lets the receiver answer.
        options.retryWindow = .seconds(60)
        let again = try WebhookSink(options: options)
        #expect(await again.deliver(events) == Array(repeating: .delivered, count: events.count))
        try await again.close()
        Self.expectOrdered(receiver.events(), events)
        await receiver.stop()
    }

    @Test("a refused token is not the events' fault: they wait, and go once the token file holds the right one")
    func rotatedToken() async throws {
        let receiver = try await WebhookReceiver.start(token: "new-token")
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let tokenFile = directory.appendingPathComponent("token").path
        try "old-token".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        var options = try Self.options(receiver)
        options.bearerTokenFile = tokenFile
        options.retryWindow = .seconds(20)
        let events = try Self.events(objects: 1, changes: 2)
        let sink = try WebhookSink(options: options)
        let delivery = Task { await sink.deliver(events) }
        try await waitUntil(timeout: .seconds(60)) { (try await receiver.stats().badTokens) > 0 }
        try "new-token".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        #expect(await delivery.value == [.delivered, .delivered])
        try await sink.close()
        await receiver.stop()
    }

    @Test("a receiver with another secret refuses every request: the signature is checked for real")
    func wrongSecret() async throws {
        let receiver = try await WebhookReceiver.start(secret: "whsec_" + Data("another-secret".utf8).base64EncodedString())
        var options = try Self.options(receiver)
        options.signingSecret = Self.secret
        let sink = try WebhookSink(options: options)
        let outcomes = await sink.deliver(try Self.events(objects: 1, changes: 1))
        #expect(outcomes.count == 1)
        if case .rejected(let reason) = outcomes[0] { #expect(reason.contains("bad signature")) } else { Issue.record("\(outcomes)") }
        #expect(try await receiver.stats().badSignatures == 1)
        try await sink.close()
        await receiver.stop()
    }

    @Test("https with the receiver's CA: HTTP/2 when the receiver offers it by ALPN, HTTP/1.1 when it does not", arguments: [
        (["h2", "http/1.1"], "2.0"), (["http/1.1"], "1.1"),
    ])
    func httpVersions(protocols: [String], expected: String) async throws {
        let receiver = try await HTTP2Receiver.start(protocols: protocols)
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let caFile = directory.appendingPathComponent("ca.pem").path
        try receiver.caPEM.write(toFile: caFile, atomically: true, encoding: .utf8)
        var options = WebhookSinkOptions(url: receiver.url)
        options.caFile = caFile
        let events = try Self.events(objects: 3, changes: 2)
        let sink = try WebhookSink(options: options)
        #expect(await sink.deliver(events) == Array(repeating: .delivered, count: events.count))
        try await sink.close()
        #expect(receiver.versions.seen.withLock { $0 } == Array(repeating: expected, count: events.count))
        try await receiver.stop()
    }

    @Test("https with a CA that did not sign the receiver's certificate: nothing is delivered, and the reason says why")
    func wrongCA() async throws {
        let receiver = try await HTTP2Receiver.start()
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let caFile = directory.appendingPathComponent("other-ca.pem").path
        try TestPKI().caCertificatePEM.write(toFile: caFile, atomically: true, encoding: .utf8)
        var options = WebhookSinkOptions(url: receiver.url)
        options.caFile = caFile
        options.retryWindow = .milliseconds(200)
        let sink = try WebhookSink(options: options)
        let outcomes = await sink.deliver(try Self.events(objects: 1, changes: 1))
        guard case .retriable(let reason) = outcomes.first else {
            Issue.record("\(outcomes)")
            return
        }
        #expect(reason.lowercased().contains("certificate") || reason.contains("handshake"), "\(reason)")
        #expect(receiver.versions.seen.withLock { $0 }.isEmpty)
        try await sink.close()
        try await receiver.stop()
    }
}
