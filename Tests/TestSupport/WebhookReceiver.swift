import AsyncHTTPClient
import Foundation
import NIOCore

/// `Fixtures/webhook/receiver.py` on 127.0.0.1: a webhook endpoint that checks the bearer token
/// and the Standard Webhooks signature, parses every event with the Python CloudEvents SDK, records
/// what it accepted, and fails on a script.
public final class WebhookReceiver: @unchecked Sendable {
    /// Picked by the receiver at its first start (binding port 0, so no other test can take it
    /// in between), and kept when it starts again.
    public private(set) var port = 0
    public let secret: String?
    public let token: String?
    public let recordPath: String
    private let directory: URL
    private let child = ChildServer()

    public var url: String { "http://127.0.0.1:\(port)/events" }

    /// One step of a failure script; each applies to `times` requests, or to every request for
    /// `seconds`.
    public struct Step: Sendable {
        var fields: [String: any Sendable]

        public static func status(_ status: Int, retryAfter: String? = nil, body: String = "", times: Int = 1) -> Step {
            var fields: [String: any Sendable] = ["status": status, "body": body, "times": times]
            if let retryAfter { fields["retry_after"] = retryAfter }
            return Step(fields: fields)
        }

        public static func status(_ status: Int, seconds: Double) -> Step {
            Step(fields: ["status": status, "seconds": seconds])
        }

        /// Closes the connection without an answer.
        public static func drop(times: Int = 1) -> Step { Step(fields: ["drop": true, "times": times]) }

        /// Answers after `seconds`.
        public static func delay(_ seconds: Double, times: Int = 1) -> Step { Step(fields: ["delay": seconds, "times": times]) }

        /// Holds the request `seconds` while it counts as in flight, then accepts it.
        public static func hold(_ seconds: Double, times: Int = 1) -> Step { Step(fields: ["hold": seconds, "times": times]) }
    }

    public struct Stats: Sendable {
        public var requests: Int
        public var events: Int
        public var badSignatures: Int
        public var badTokens: Int
        public var parseErrors: Int
        public var overlaps: Int
        public var maxInFlight: Int
        public var statuses: [String: Int]
        public var modes: [String: Int]
    }

    /// `secret`: a Standard Webhooks secret (`whsec_...`) every request must be signed with.
    public static func start(secret: String? = nil, token: String? = nil) async throws -> WebhookReceiver {
        let receiver = try WebhookReceiver(secret: secret, token: token)
        try await receiver.run()
        return receiver
    }

    private init(secret: String?, token: String?) throws {
        self.secret = secret
        self.token = token
        directory = try temporaryDirectory()
        recordPath = directory.appendingPathComponent("received.jsonl").path
    }

    /// Starts the receiver (again: its record survives), and waits until it accepts connections.
    public func run() async throws {
        let script = Fixtures.directory.appendingPathComponent("webhook/receiver.py").path
        let portFile = directory.appendingPathComponent("port").path
        port = try await child.start("/usr/bin/env", ["python3", script, "--port", String(port), "--port-file", portFile, "--out", recordPath]
                                     + (secret.map { ["--secret", $0] } ?? []) + (token.map { ["--token", $0] } ?? []),
                                     portFile: portFile, standardError: FileHandle(forWritingAtPath: "/dev/stderr"),
                                     failure: "the webhook receiver did not start (pip install cloudevents standardwebhooks)")
    }

    /// SIGKILL, as a crashed receiver; `run` starts it again.
    public func kill() async {
        await child.kill()
    }

    public func stop() async {
        await kill()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Replaces the failure script.
    public func script(_ steps: [Step]) async throws {
        let body = try JSONSerialization.data(withJSONObject: steps.map { $0.fields })
        _ = try await Self.send("POST", "http://127.0.0.1:\(port)/_script", body: body)
    }

    public func stats() async throws -> Stats {
        let data = try await Self.send("GET", "http://127.0.0.1:\(port)/_stats", body: nil)
        guard let json = try JSONSerialization.jsonObject(with: data) as? [String: Any] else { throw TestFailure(message: "bad stats") }
        func int(_ key: String) -> Int { json[key] as? Int ?? 0 }
        return Stats(requests: int("requests"), events: int("events"), badSignatures: int("bad_signatures"), badTokens: int("bad_tokens"),
                     parseErrors: int("parse_errors"), overlaps: int("overlaps"), maxInFlight: int("max_in_flight"),
                     statuses: json["statuses"] as? [String: Int] ?? [:], modes: json["modes"] as? [String: Int] ?? [:])
    }

    /// Every accepted event's attributes (with `_mode`, `_webhook_id` and `_name`, the object's
    /// name), in arrival order.
    public func events() -> [[String: Any]] {
        guard let text = try? String(contentsOfFile: recordPath, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    private static func send(_ method: String, _ url: String, body: Data?) async throws -> Data {
        var request = HTTPClientRequest(url: url)
        request.method = .RAW(value: method)
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        return Data(bytes.readableBytesView)
    }
}
