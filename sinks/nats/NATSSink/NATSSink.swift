import BridgeCore
import Foundation
import KubeModel
import Logging
import NIOCore
import Synchronization

/// How the NATS sink connects and what it publishes.
public struct NATSSinkOptions: Sendable {
    /// The modes of the CloudEvents NATS binding.
    public static let modes: [ContentMode] = [.binary, .structured]

    /// When a stream drops messages (JetStream's retention policies).
    public enum Retention: String, Sendable, CaseIterable {
        /// When a limit (messages, bytes, age) is reached.
        case limits
        /// Once every consumer acknowledged them.
        case interest
        /// Once one consumer acknowledged them.
        case workqueue
    }

    /// `nats://host:port` URLs.
    public var servers: [String]
    /// The subject of each event: `{group}` (`core` for the core group), `{version}`,
    /// `{resource}`, `{namespace}` (`_` for cluster-scoped objects) and `{name}`, each escaped
    /// into one subject token (see `SubjectToken`).
    public var subject = "kube.{group}.{version}.{resource}.{namespace}.{name}"
    public var mode = ContentMode.binary
    /// Each event carries its merge patch (`mergepatch`), when there is one; in binary mode as
    /// the `ce-mergepatch` header up to `Envelope.patchHeaderLimit` bytes, else `ce-patchomitted`.
    public var mergePatch = false
    /// The JetStream stream the subjects belong to.
    public var stream = "KUBEBRIDGE"
    /// Create the stream when it is missing (subjects from the template, file storage).
    public var createStream = false
    /// The stream's duplicate window, when kubebridge creates it.
    public var duplicateWindow: Duration = .seconds(120)
    /// The stream's retention, when kubebridge creates it.
    public var retention = Retention.limits
    public var replicas = 1
    public var token: String?
    public var user: String?
    public var password: String?
    public var credentialsFile: String?
    /// A user nkey seed file (`SU...`); the public key is derived from it.
    public var nkeySeedFile: String?
    public var caFile: String?
    /// PubAcks awaited at once.
    public var maxPending = 4096

    public init(servers: [String]) {
        self.servers = servers
    }

    /// The stream's subjects for the template: each placeholder becomes `*`.
    public var streamSubjects: [String] {
        [DestinationTemplate(subject).render(group: "*", version: "*", resource: "*", namespace: "*", name: { "*" })]
    }

    /// Checks the template: known placeholders only, each one a whole token.
    public func validate() throws {
        guard !servers.isEmpty else { throw NATSError(description: "servers: at least one nats://host:port is needed") }
        guard NATSSinkOptions.modes.contains(mode) else {
            throw NATSError(description: "mode: the CloudEvents NATS binding has no \(mode.rawValue) mode; use binary or structured")
        }
        let tokens = subject.split(separator: ".", omittingEmptySubsequences: false)
        let known = Set(DestinationTemplate.placeholders.map { Substring($0) })
        for token in tokens {
            if token.isEmpty { throw NATSError(description: "subject \"\(subject)\": an empty token") }
            if token.contains("{") || token.contains("}") {
                guard known.contains(token) else {
                    throw NATSError(description: "subject \"\(subject)\": \"\(token)\" is not a placeholder on its own; the known ones are \(known.sorted().joined(separator: ", ")), each a whole token")
                }
            } else if !SubjectToken.isLiteral(token) {
                throw NATSError(description: "subject \"\(subject)\": \"\(token)\" is not a valid subject token (no spaces, *, > or control characters)")
            }
        }
    }
}

/// Kubernetes names and groups as NATS subject tokens. A token may not hold `.`, `*`, `>` or
/// whitespace, and Kubernetes names have dots (`networking.k8s.io`, `my.config`). Those bytes,
/// `%` itself and anything outside printable ASCII become `%XX` (uppercase hex), so the escaping
/// is reversible and keeps everything else as it is: `networking.k8s.io` is
/// `networking%2Ek8s%2Eio`, `kube-system` stays `kube-system`.
public enum SubjectToken {
    public static func escape(_ text: String) -> String {
        PercentEncoding.encode(text) {
            $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ".") && $0 != UInt8(ascii: "*") && $0 != UInt8(ascii: ">") && $0 != UInt8(ascii: "%")
        }
    }

    /// The text `escape` was given, or nil for a token it cannot have made.
    public static func unescape(_ token: String) -> String? {
        var bytes: [UInt8] = []
        var iterator = token.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next(), let low = iterator.next(), let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16) else {
                return nil
            }
            bytes.append(value)
        }
        return String(validating: bytes, as: UTF8.self)
    }

    /// Whether a stream's subject filter takes every subject `pattern` can stand for, by NATS'
    /// token rules: `*` takes one token, `>` the rest.
    public static func filter(_ filter: String, covers pattern: String) -> Bool {
        let wanted = pattern.split(separator: ".", omittingEmptySubsequences: false)
        let tokens = filter.split(separator: ".", omittingEmptySubsequences: false)
        for (index, token) in tokens.enumerated() {
            if token == ">" { return index < wanted.count }
            guard index < wanted.count else { return false }
            if token == "*" { continue }
            if token != wanted[index] { return false }
        }
        return tokens.count == wanted.count
    }

    static func isLiteral(_ token: Substring) -> Bool {
        token.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "*") && $0 != UInt8(ascii: ">") }
    }
}

/// Publishes events to JetStream. An event counts as delivered only on its PubAck; every message
/// carries `Nats-Msg-Id` = the event's id, so a redelivery after a crash is dropped by the server
/// as a duplicate within the stream's duplicate window (and is acknowledged as one).
public final class NATSSink: Sink {
    public let name: String
    public let options: NATSSinkOptions
    let publisher: JetStreamPublisher
    let subjectTemplate: DestinationTemplate
    let logger: Logger
    /// The stream was found or created; checked at start when the servers answer, else before
    /// the first delivery.
    private let streamReady = Atomic<Bool>(false)

    /// Connects (retrying in the background while the servers are away) and checks or creates the
    /// stream: now when the servers answer, so that a missing stream is an error at start.
    public init(name: String = "nats", options: NATSSinkOptions, logger: Logger = Logger(label: "kubebridge")) async throws {
        try options.validate()
        self.name = name
        self.options = options
        subjectTemplate = DestinationTemplate(options.subject)
        var logger = logger
        logger[metadataKey: "sink"] = "\(name)"
        self.logger = logger
        var settings = NATSConnectionSettings(servers: options.servers)
        settings.token = options.token
        settings.user = options.user
        settings.password = options.password
        settings.credentialsFile = options.credentialsFile
        if let seedFile = options.nkeySeedFile { settings.nkey = (try NKey.userPublicKey(seedFile: seedFile), seedFile) }
        settings.caFile = options.caFile
        settings.maxPending = options.maxPending
        publisher = try JetStreamPublisher(settings: settings, logger: logger)
        guard publisher.isConnected else { return }
        do {
            try await ensureStream()
        } catch {
            await publisher.close(timeout: .seconds(1))
            throw error
        }
    }

    /// Connected to a server now.
    public var isConnected: Bool? { publisher.isConnected }

    /// Waits until a server is connected and the stream is checked, at most `timeout`; what a
    /// readiness check wants to know.
    public func waitUntilReady(timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        while !publisher.isConnected {
            guard ContinuousClock.now < deadline else { throw NATSError(description: "no NATS server answered within \(timeout)") }
            try await Task.sleep(for: .milliseconds(50))
        }
        if !streamReady.load(ordering: .relaxed) { try await ensureStream() }
    }

    private func ensureStream() async throws {
        let (publisher, options, logger) = (self.publisher, self.options, self.logger)
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            Thread {
                do {
                    try publisher.ensureStream(JetStreamPublisher.StreamSettings(
                        name: options.stream, subjects: options.streamSubjects, create: options.createStream, duplicateWindow: options.duplicateWindow,
                        replicas: options.replicas, retention: NATSSinkOptions.Retention.allCases.firstIndex(of: options.retention) ?? 0), logger: logger)
                    continuation.resume()
                } catch {
                    continuation.resume(throwing: error)
                }
            }.start()
        }
        streamReady.store(true, ordering: .relaxed)
    }

    /// The subject of an event.
    public func subject(for event: OutboundEvent) -> String {
        subjectTemplate.render(event, clusterScoped: "_", escape: SubjectToken.escape)
    }

    /// The headers of an event's message in `mode`, `Nats-Msg-Id` first.
    public static func headers(of event: OutboundEvent, mode: ContentMode, mergePatch: Bool = false) -> [(name: String, value: String)] {
        let envelope = event.envelope
        switch mode {
        case .structured:
            return [("Nats-Msg-Id", envelope.id), ("content-type", "application/cloudevents+json; charset=UTF-8")]
        case .binary:
            var headers: [(name: String, value: String)] = [
                ("Nats-Msg-Id", envelope.id), ("content-type", Envelope.dataContentType), ("ce-specversion", "1.0"), ("ce-id", envelope.id),
                ("ce-source", envelope.source), ("ce-type", envelope.type), ("ce-subject", envelope.subject), ("ce-time", envelope.time),
            ]
            for (name, value) in envelope.extensions(patch: mergePatch ? .upTo(Envelope.patchHeaderLimit) : .none) { headers.append(("ce-" + name, value)) }
            return headers
        case .batch:
            preconditionFailure("the NATS binding has no batch mode, and NATSSinkOptions.validate says so")
        }
    }

    public func deliver(_ batch: [OutboundEvent]) async -> [DeliveryOutcome] {
        await send(batch).outcomes()
    }

    /// Publishes the batch in order; its PubAcks are awaited later, so the next batches go out
    /// meanwhile.
    public func send(_ batch: [OutboundEvent]) async -> PendingDelivery {
        if !streamReady.load(ordering: .relaxed) {
            guard publisher.isConnected else { return .settled(batch.map { _ in .retriable("the NATS servers cannot be reached yet") }) }
            do {
                try await ensureStream()
            } catch let error as NATSError where error.unusableStream {
                return .settled(batch.map { _ in .fatal(error.description) })
            } catch {
                return .settled(batch.map { _ in .retriable("\(error)") })
            }
        }
        var waiters: [PublishWaiter] = []
        waiters.reserveCapacity(batch.count)
        for event in batch {
            let payload = options.mode == .structured ? event.envelope.structured(patch: options.mergePatch) : event.envelope.data
            waiters.append(publisher.publish(subject: subject(for: event), headers: Self.headers(of: event, mode: options.mode, mergePatch: options.mergePatch),
                                             data: payload))
        }
        return PendingDelivery { [waiters] in await Self.outcomes(of: batch, waiters: waiters) }
    }

    private static func outcomes(of batch: [OutboundEvent], waiters: [PublishWaiter]) async -> [DeliveryOutcome] {
        var outcomes: [DeliveryOutcome] = []
        outcomes.reserveCapacity(batch.count)
        for waiter in waiters {
            switch await waiter.wait() {
            case .stored:
                outcomes.append(.delivered)
            case .invalid(let reason):
                outcomes.append(.rejected(reason))
            case .failed(let reason, let refused):
                // A refusal (a full stream with discard new, say) is retried too: the checkpoint
                // holds until the stream takes the message.
                outcomes.append(.retriable(refused ? "JetStream refused it: \(reason)" : "NATS: \(reason)"))
            }
        }
        return outcomes
    }

    public func close() async throws {
        await publisher.close(timeout: .seconds(10))
    }
}
