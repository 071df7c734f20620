import AsyncHTTPClient
import BridgeCore
import Foundation
import KubeModel
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization

/// Where and how the webhook sink posts events.
public struct WebhookSinkOptions: Sendable {
    /// The modes of the CloudEvents HTTP binding: one event per request (binary, structured) or
    /// a JSON array of them (batch).
    public static let modes = ContentMode.allCases

    /// `http://` or `https://`.
    public var url: String
    public var mode = ContentMode.binary
    /// Each event carries its merge patch (`mergepatch`), when there is one; in binary mode as
    /// the `ce-mergepatch` header up to `Envelope.patchHeaderLimit` bytes, else `ce-patchomitted`.
    public var mergePatch = false
    /// The most events and bytes in one batched request.
    public var batchMaxEvents = 100
    public var batchMaxBytes = 1024 * 1024
    /// The most requests in flight at once; an object's changes never overlap, whatever this is.
    public var concurrency = 16
    /// Each request's deadline, from sending to the end of the response.
    public var timeout: Duration = .seconds(10)
    /// How one request is retried (5xx, timeouts, connection errors; 429 and 503 wait for their
    /// `Retry-After` instead).
    public var retry = Backoff(initial: .milliseconds(200), maximum: .seconds(10))
    /// How long one request is retried before its events go back to the pipeline, which sends
    /// them again after its own backoff: a retry never ends in a loss, only in a longer wait.
    public var retryWindow: Duration = .seconds(30)
    /// The longest `Retry-After` honoured; a receiver asking for more is asked again after this.
    public var maxRetryAfter: Duration = .seconds(300)
    /// Sent with every request.
    public var headers: [(name: String, value: String)] = []
    /// A file holding a bearer token, read again when it changes (a projected token, say).
    public var bearerTokenFile: String?
    /// The Standard Webhooks secret (`whsec_...`); requests are signed when it is set.
    public var signingSecret: String?
    /// PEM certificates that verify the receiver, instead of the system's roots.
    public var caFile: String?

    public init(url: String) {
        self.url = url
    }

    /// Batches large enough to keep `concurrency` requests busy.
    public static let defaultPipeline: Pipeline.Options = {
        var options = Pipeline.Options()
        options.batchSize = 1000
        options.maxBufferedEvents = 10000
        return options
    }()

    public func validate() throws {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(), ["http", "https"].contains(scheme),
              let host = components.host, !host.isEmpty else {
            throw WebhookError(description: "url \"\(url)\" is not an http:// or https:// URL with a host")
        }
        guard batchMaxEvents > 0, batchMaxBytes > 0, concurrency > 0 else {
            throw WebhookError(description: "batchMaxEvents, batchMaxBytes and concurrency must be at least 1")
        }
        for (name, value) in headers {
            guard !name.isEmpty, name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && !"()<>@,;:\\\"/[]?={}".utf8.contains($0) }) else {
                throw WebhookError(description: "header name \"\(name)\" is not an HTTP token")
            }
            guard !value.utf8.contains(where: { ($0 < 0x20 && $0 != 0x09) || $0 == 0x7F }) else {
                throw WebhookError(description: "header \(name): a value may not hold a line break or another control character")
            }
        }
        if let secret = signingSecret { _ = try WebhookSigner(secret: secret) }
    }
}

/// Posts events to an HTTP endpoint in the CloudEvents HTTP binding. An event counts as delivered
/// only on a 2xx. Requests go out on `concurrency` lanes; an object always takes the same lane
/// and a lane sends one request at a time, so a change is never sent while an older change of the
/// same object is in flight.
public final class WebhookSink: Sink {
    public let name: String
    public let options: WebhookSinkOptions
    let client: HTTPClient
    let signer: WebhookSigner?
    let token: TokenFile?
    let logger: Logger
    /// Until when the receiver asked for quiet (`Retry-After`); every lane waits for it.
    private let quietUntil = Mutex<ContinuousClock.Instant?>(nil)
    private let lastWarning = Mutex<ContinuousClock.Instant?>(nil)

    public init(name: String = "webhook", options: WebhookSinkOptions, logger: Logger = Logger(label: "kubebridge")) throws {
        try options.validate()
        self.name = name
        self.options = options
        var logger = logger
        logger[metadataKey: "sink"] = "\(name)"
        self.logger = logger
        signer = try options.signingSecret.map(WebhookSigner.init(secret:))
        token = try options.bearerTokenFile.map(TokenFile.init(path:))
        var tls = TLSConfiguration.makeClientConfiguration()
        if let caFile = options.caFile {
            do {
                let certificates = try NIOSSLCertificate.fromPEMFile(caFile)
                guard !certificates.isEmpty else { throw WebhookError(description: "no certificate in it") }
                tls.trustRoots = .certificates(certificates)
            } catch {
                throw WebhookError(description: "caFile \(caFile) does not hold PEM certificates: \(error)")
            }
        }
        var configuration = HTTPClient.Configuration(
            tlsConfiguration: tls, redirectConfiguration: .disallow,
            timeout: .init(connect: .milliseconds(Int64(min(options.timeout, .seconds(10)).milliseconds))))
        configuration.httpVersion = .automatic
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: options.concurrency)
        // The lanes back off on their own, and say why; the pool should not hide a refused connection.
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.decompression = .disabled
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    public func deliver(_ batch: [OutboundEvent]) async -> [DeliveryOutcome] {
        var outcomes = [DeliveryOutcome](repeating: .retriable("not sent"), count: batch.count)
        await withTaskGroup(of: [(Int, DeliveryOutcome)].self) { group in
            for lane in lanes(of: batch) where !lane.isEmpty {
                group.addTask { await self.deliver(lane: lane, of: batch) }
            }
            for await results in group {
                for (index, outcome) in results { outcomes[index] = outcome }
            }
        }
        return outcomes
    }

    /// The batch's indices split into lanes by object.
    func lanes(of batch: [OutboundEvent]) -> [[Int]] {
        let wanted = options.mode == .batch ? (batch.count + options.batchMaxEvents - 1) / options.batchMaxEvents : batch.count
        let count = max(1, min(options.concurrency, wanted))
        var lanes = [[Int]](repeating: [], count: count)
        for (index, event) in batch.enumerated() {
            var hasher = Hasher()
            hasher.combine(event.envelope.partitionKey)
            lanes[Int(UInt(bitPattern: hasher.finalize()) % UInt(count))].append(index)
        }
        return lanes
    }

    /// Sends a lane's events in order, one request at a time; once a request cannot be delivered
    /// within the retry window, it and everything after it go back to the pipeline unsent.
    private func deliver(lane: [Int], of batch: [OutboundEvent]) async -> [(Int, DeliveryOutcome)] {
        var results: [(Int, DeliveryOutcome)] = []
        results.reserveCapacity(lane.count)
        var requests = requests(for: lane, of: batch)
        var next = 0
        while next < requests.count {
            let request = requests[next]
            next += 1
            let patch = options.mergePatch
            let message = options.mode == .batch ? WebhookMessage.batch(request.map { batch[$0] }, patch: patch)
                : options.mode == .structured ? WebhookMessage.structured(batch[request[0]], patch: patch) : WebhookMessage.binary(batch[request[0]], patch: patch)
            switch await send(message) {
            case .delivered:
                results += request.map { ($0, .delivered) }
            case .rejected(let reason):
                results += request.map { ($0, .rejected(reason)) }
            case .tooLarge(let reason):
                guard request.count > 1 else {
                    results.append((request[0], .rejected(reason)))
                    continue
                }
                // The receiver takes smaller requests, maybe: the halves go next, in order.
                let half = request.count / 2
                requests.insert(contentsOf: [Array(request[..<half]), Array(request[half...])], at: next)
            case .retriable(let reason):
                for unsent in requests[(next - 1)...] { results += unsent.map { ($0, .retriable(reason)) } }
                return results
            }
        }
        return results
    }

    /// A lane's events grouped into requests: one each, or batches within the limits.
    private func requests(for lane: [Int], of batch: [OutboundEvent]) -> [[Int]] {
        guard options.mode == .batch else { return lane.map { [$0] } }
        var requests: [[Int]] = []
        var current: [Int] = []
        var bytes = 2
        for index in lane {
            let size = batch[index].size + 1
            if !current.isEmpty, current.count >= options.batchMaxEvents || bytes + size > options.batchMaxBytes {
                requests.append(current)
                current = []
                bytes = 2
            }
            current.append(index)
            bytes += size
        }
        if !current.isEmpty { requests.append(current) }
        return requests
    }

    enum RequestOutcome: Equatable {
        case delivered
        case rejected(String)
        case tooLarge(String)
        case retriable(String)
    }

    /// Sends one request until the receiver confirms or refuses it for good, or the retry window
    /// is spent.
    private func send(_ message: WebhookMessage) async -> RequestOutcome {
        let started = ContinuousClock.now
        var random = SystemRandomNumberGenerator()
        var attempt = 0
        while true {
            attempt += 1
            await waitForQuiet()
            if Task.isCancelled { return .retriable("shutting down before the receiver confirmed it") }
            let verdict: ResponseVerdict
            do {
                let response = try await client.execute(request(for: message), timeout: .milliseconds(Int64(options.timeout.milliseconds)))
                let excerpt = try await Self.excerpt(of: response.body)
                verdict = ResponseVerdict(status: Int(response.status.code), retryAfter: response.headers.first(name: "retry-after"), body: excerpt)
            } catch {
                if Task.isCancelled { return .retriable("shutting down before the receiver confirmed it") }
                verdict = .retry("\(Self.describe(error))", after: nil)
            }
            var delay = options.retry.delay(attempt: attempt, using: &random)
            switch verdict {
            case .delivered:
                return .delivered
            case .permanent(let reason):
                return .rejected(reason)
            case .tooLarge(let reason):
                return .tooLarge(reason)
            case .unauthorized(let reason):
                token?.invalidate()
                warn("the receiver refuses kubebridge's credentials (\(reason)); events wait, nothing is dead-lettered, until it accepts them")
                if started.duration(to: .now) + delay > options.retryWindow { return .retriable(reason) }
            case .retry(let reason, let after):
                if let after {
                    delay = min(after, options.maxRetryAfter)
                    quiet(for: delay)
                }
                if attempt == 1 { warn("\(options.url): \(reason); retrying") }
                if started.duration(to: .now) + delay > options.retryWindow { return .retriable(reason) }
            }
            try? await Task.sleep(for: delay)
        }
    }

    private func request(for message: WebhookMessage) throws -> HTTPClientRequest {
        var request = HTTPClientRequest(url: options.url)
        request.method = .POST
        request.headers.reserveCapacity(message.headers.count + options.headers.count + 5)
        for (name, value) in message.headers { request.headers.add(name: name, value: value) }
        if let signer {
            let timestamp = Int(Date().timeIntervalSince1970)
            request.headers.add(name: "webhook-id", value: message.id)
            request.headers.add(name: "webhook-timestamp", value: String(timestamp))
            request.headers.add(name: "webhook-signature", value: signer.signature(id: message.id, timestamp: timestamp, body: message.body))
        }
        if let token { request.headers.add(name: "authorization", value: "Bearer \(try token.value())") }
        for (name, value) in options.headers { request.headers.add(name: name, value: value) }
        request.headers.add(name: "user-agent", value: "kubebridge")
        request.body = .bytes(message.body)
        return request
    }

    /// The response body's first bytes, for a dead letter's reason; the rest is read and dropped,
    /// so the connection can serve the next request.
    static func excerpt(of body: HTTPClientResponse.Body) async throws -> String {
        var excerpt = ByteBuffer()
        for try await var chunk in body where excerpt.readableBytes < 256 {
            var slice = chunk.readSlice(length: min(chunk.readableBytes, 256 - excerpt.readableBytes))!
            excerpt.writeBuffer(&slice)
        }
        return String(decoding: excerpt.readableBytesView, as: UTF8.self)
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError {
            switch error {
            case .deadlineExceeded: return "no response within the request timeout"
            case .connectTimeout: return "the connection timed out"
            case .remoteConnectionClosed: return "the receiver closed the connection before it answered"
            default: return "\(error)"
            }
        }
        return "\(error)"
    }

    private func waitForQuiet() async {
        guard let until = quietUntil.withLock({ $0 }), until > .now else { return }
        try? await Task.sleep(until: until)
    }

    private func quiet(for delay: Duration) {
        let until = ContinuousClock.now + delay
        quietUntil.withLock { $0 = max($0 ?? until, until) }
    }

    /// At most one warning in five seconds: a receiver down fails every lane at once.
    private func warn(_ message: @autoclosure () -> String) {
        let now = ContinuousClock.now
        let due = lastWarning.withLock { last -> Bool in
            if let last, last.duration(to: now) < .seconds(5) { return false }
            last = now
            return true
        }
        if due { logger.warning("\(message())") }
    }

    public func close() async throws {
        try await client.shutdown()
    }
}

/// What a response means for the events it carried.
enum ResponseVerdict: Equatable {
    case delivered
    /// 429, 503 (after `Retry-After` when given), 408, 409, other 5xx.
    case retry(String, after: Duration?)
    /// 401, 403: the credentials, not the events, are wrong.
    case unauthorized(String)
    /// 413: a batch may go through in halves.
    case tooLarge(String)
    /// Any other status: dead-lettered with the status and the first bytes of the body.
    case permanent(String)

    init(status: Int, retryAfter: String?, body: String, now: Date = Date()) {
        let reason = body.isEmpty ? "HTTP \(status)" : "HTTP \(status): \(body.trimmingCharacters(in: .whitespacesAndNewlines))"
        switch status {
        case 200..<300:
            self = .delivered
        case 429, 503:
            self = .retry(reason, after: retryAfter.flatMap { Self.retryAfter($0, now: now) })
        case 408, 409, 425, 500..<600:
            self = .retry(reason, after: nil)
        case 401, 403:
            self = .unauthorized(reason)
        case 413:
            self = .tooLarge(reason)
        default:
            self = .permanent(reason)
        }
    }

    /// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 section 10.2.3).
    static func retryAfter(_ value: String, now: Date) -> Duration? {
        let text = value.trimmingCharacters(in: .whitespaces)
        if let seconds = Int(text), seconds >= 0 { return .seconds(seconds) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: text) else { return nil }
        return .milliseconds(Int64(max(0, date.timeIntervalSince(now)) * 1000))
    }
}

/// A bearer token read from a file, again after a minute or after the receiver refused it, so a
/// rotated token is picked up without a restart.
final class TokenFile: Sendable {
    let path: String
    private let state = Mutex<(token: String, readAt: ContinuousClock.Instant)?>(nil)

    init(path: String) throws {
        self.path = path
        _ = try value()
    }

    func value() throws -> String {
        if let cached = state.withLock({ $0 }), cached.readAt.duration(to: .now) < .seconds(60) { return cached.token }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw WebhookError(description: "bearerTokenFile \(path) cannot be read")
        }
        let token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty, !token.contains(where: \.isNewline) else {
            throw WebhookError(description: "bearerTokenFile \(path) holds no token on one line")
        }
        state.withLock { $0 = (token, .now) }
        return token
    }

    func invalidate() {
        state.withLock { $0 = nil }
    }
}

extension Duration {
    var milliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }
}
