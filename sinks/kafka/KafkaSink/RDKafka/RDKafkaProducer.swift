import BridgeCore
import CRdKafka
import Foundation
import Logging
import NIOCore
import Synchronization

/// A NUL-terminated C string held in an array.
func cString(_ characters: [CChar]) -> String {
    let bytes = characters.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}

/// What librdkafka reported for one message.
enum DeliveryReport: Sendable, Equatable {
    /// Persisted by the brokers (acks=all).
    case persisted
    case failed(code: Int32, message: String, kind: FailureKind)

    enum FailureKind: Sendable, Equatable {
        /// The message will never be accepted (too large, invalid).
        case rejected
        /// The producer cannot go on (fenced, not authorized).
        case fatal
        case retriable
    }
}

/// A message to produce; no C type crosses this boundary.
struct KafkaMessage: Sendable {
    var topic: String
    var key: String
    var value: ByteBuffer
    var headers: KafkaHeaders
}

/// The delivery reports of one batch of messages, which may come before anyone waits.
final class DeliveryReports: Sendable {
    private let state: Mutex<(reports: [DeliveryReport?], missing: Int)>
    private let all = Completion<[DeliveryReport]>()

    init(count: Int) {
        state = Mutex((Array(repeating: nil, count: count), count))
        if count == 0 { all.complete([]) }
    }

    /// Records the report of the message at `index`; true once every message has its report.
    @discardableResult
    func record(_ report: DeliveryReport, at index: Int) -> Bool {
        let finished = state.withLock { state -> [DeliveryReport]? in
            guard state.reports[index] == nil else { return nil }
            state.reports[index] = report
            state.missing -= 1
            return state.missing == 0 ? state.reports.map { $0! } : nil
        }
        guard let finished else { return false }
        all.complete(finished)
        return true
    }

    /// Gives every message still without a report this one.
    func recordMissing(_ report: DeliveryReport) {
        let indices = state.withLock { state in state.reports.indices.filter { state.reports[$0] == nil } }
        for index in indices { record(report, at: index) }
    }

    /// Every message's report, in the batch's order.
    func wait() async -> [DeliveryReport] {
        await all.wait()
    }
}

/// An error in the producer's configuration: the property and librdkafka's words.
struct KafkaConfigurationError: Error, CustomStringConvertible {
    var description: String
}

/// What the C callbacks need: found through the producer's opaque pointer.
final class ProducerContext: Sendable {
    let logger: Logger
    let fatalError = Mutex<String?>(nil)

    init(logger: Logger) {
        self.logger = logger
    }
    /// The batches waiting for reports: a few at a time (the pipeline's batches in flight), so a
    /// list, searched from the oldest. A message's opaque pointer carries its batch's id in the
    /// high 32 bits and its index in the batch in the low 32 bits.
    let batches = Mutex<(next: UInt, waiting: [(id: UInt, reports: DeliveryReports)])>((1, []))

    func register(_ reports: DeliveryReports) -> UInt {
        batches.withLock { batches in
            let id = batches.next
            batches.next = batches.next == UInt(UInt32.max) ? 1 : batches.next + 1
            batches.waiting.append((id, reports))
            return id
        }
    }

    static func opaque(batch: UInt, index: Int) -> UInt {
        batch << 32 | UInt(index)
    }

    func complete(_ opaque: UInt, with report: DeliveryReport) {
        let id = opaque >> 32
        guard let reports = batches.withLock({ $0.waiting.first { $0.id == id }?.reports }) else { return }
        if reports.record(report, at: Int(opaque & 0xFFFF_FFFF)) {
            batches.withLock { $0.waiting.removeAll { $0.id == id } }
        }
    }

    /// Completes every message still waiting: used once the handle is gone.
    func completeAll(with report: DeliveryReport) {
        let left = batches.withLock { batches in
            defer { batches.waiting.removeAll() }
            return batches.waiting.map(\.reports)
        }
        for reports in left { reports.recordMissing(report) }
    }
}

/// The `rd_kafka_t` handle, for the poll thread and the producer.
struct ProducerHandle: @unchecked Sendable {
    let pointer: OpaquePointer
}

/// A librdkafka producer. It owns the `rd_kafka_t` and frees it on `close`. Delivery reports are
/// matched to their messages through the per-message opaque pointer, which carries an id. A
/// dedicated thread polls, so no blocking call runs on Swift's cooperative pool.
final class RDKafkaProducer: Sendable {
    private let handle: ProducerHandle
    private let context: ProducerContext
    /// The context's retained pointer, as given to librdkafka.
    private let opaque: UInt
    private let poll = PollState()
    private let closed = Atomic<Bool>(false)
    /// A handle per topic, made with `rd_kafka_topic_new` on the first message to it: that asks
    /// the brokers for the topic's partitions at once, where a message that only names its topic
    /// waits for librdkafka's once-a-second scan of unknown topics.
    private let topics = Mutex<[String: TopicHandle]>([:])

    struct TopicHandle: @unchecked Sendable {
        let pointer: OpaquePointer
    }

    /// Shared with the poll thread.
    final class PollState: Sendable {
        let running = Atomic<Bool>(true)
        let stopped = Mutex<CheckedContinuation<Void, Never>?>(nil)
    }

    /// A librdkafka configuration with `properties` set; the caller owns it.
    private static func configuration(_ properties: [String: String]) throws -> OpaquePointer {
        let configuration = rd_kafka_conf_new()!
        var errorText = [CChar](repeating: 0, count: 512)
        for (key, value) in properties.sorted(by: { $0.key < $1.key }) {
            guard rd_kafka_conf_set(configuration, key, value, &errorText, errorText.count) == RD_KAFKA_CONF_OK else {
                rd_kafka_conf_destroy(configuration)
                let shown = key.contains("password") || key.contains("secret") ? "(hidden)" : value
                throw KafkaConfigurationError(description: "Kafka property \(key)=\(shown): \(cString(errorText))")
            }
        }
        return configuration
    }

    static func validate(properties: [String: String]) throws {
        rd_kafka_conf_destroy(try configuration(properties))
    }

    init(properties: [String: String], logger: Logger) throws {
        let configuration = try Self.configuration(properties)
        var errorText = [CChar](repeating: 0, count: 512)
        let context = ProducerContext(logger: logger)
        let opaque = Unmanaged.passRetained(context).toOpaque()
        rd_kafka_conf_set_opaque(configuration, opaque)
        rd_kafka_conf_set_dr_msg_cb(configuration) { _, message, opaque in
            guard let message, let id = message.pointee._private, let opaque else { return }
            let context = Unmanaged<ProducerContext>.fromOpaque(opaque).takeUnretainedValue()
            context.complete(UInt(bitPattern: id), with: RDKafkaProducer.report(message.pointee.err))
        }
        rd_kafka_conf_set_error_cb(configuration) { handle, code, reason, opaque in
            guard let handle, let opaque else { return }
            let context = Unmanaged<ProducerContext>.fromOpaque(opaque).takeUnretainedValue()
            let reason = reason.map { String(cString: $0) } ?? ""
            guard code == RD_KAFKA_RESP_ERR__FATAL.rawValue else {
                // Brokers unreachable, connections refused, authentication failing: librdkafka
                // keeps trying, and the messages wait; the operator needs to know why.
                context.logger.warning("kafka: \(String(cString: rd_kafka_err2str(rd_kafka_resp_err_t(rawValue: code)))): \(reason)")
                return
            }
            var text = [CChar](repeating: 0, count: 512)
            let underlying = rd_kafka_fatal_error(handle, &text, text.count)
            let fatal = "\(String(cString: rd_kafka_err2str(underlying))): \(cString(text))"
            context.logger.critical("kafka: the producer cannot go on: \(fatal)")
            context.fatalError.withLock { $0 = fatal }
        }
        rd_kafka_conf_set_log_cb(configuration) { handle, level, facility, message in
            guard let handle, let opaque = rd_kafka_opaque(handle) else { return }
            let context = Unmanaged<ProducerContext>.fromOpaque(opaque).takeUnretainedValue()
            // Syslog levels.
            let swiftLevel: Logger.Level = switch level {
            case ...3: .error
            case 4: .warning
            case 5: .notice
            case 6: .info
            default: .debug
            }
            context.logger.log(level: swiftLevel, "kafka: \(message.map { String(cString: $0) } ?? "")",
                               metadata: ["facility": "\(facility.map { String(cString: $0) } ?? "")"])
        }
        guard let pointer = rd_kafka_new(RD_KAFKA_PRODUCER, configuration, &errorText, errorText.count) else {
            Unmanaged<ProducerContext>.fromOpaque(opaque).release()
            throw KafkaConfigurationError(description: "the Kafka producer could not start: \(cString(errorText))")
        }
        self.handle = ProducerHandle(pointer: pointer)
        self.context = context
        self.opaque = UInt(bitPattern: opaque)
        let handle = self.handle
        let poll = self.poll
        let thread = Thread {
            while poll.running.load(ordering: .relaxed) { rd_kafka_poll(handle.pointer, 100) }
            poll.stopped.withLock { $0?.resume(); $0 = nil }
        }
        thread.name = "kubebridge-kafka-poll"
        thread.start()
    }

    static func report(_ code: rd_kafka_resp_err_t) -> DeliveryReport {
        guard code != RD_KAFKA_RESP_ERR_NO_ERROR else { return .persisted }
        return .failed(code: code.rawValue, message: String(cString: rd_kafka_err2str(code)), kind: classify(code))
    }

    static func classify(_ code: rd_kafka_resp_err_t) -> DeliveryReport.FailureKind {
        switch code {
        case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, RD_KAFKA_RESP_ERR_INVALID_RECORD, RD_KAFKA_RESP_ERR_INVALID_MSG,
             RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE, RD_KAFKA_RESP_ERR__INVALID_ARG, RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
            return .rejected
        case RD_KAFKA_RESP_ERR__FATAL, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED,
             RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED, RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
             RD_KAFKA_RESP_ERR__AUTHENTICATION:
            return .fatal
        default:
            return .retriable
        }
    }

    /// The reason the producer stopped for good, if it did.
    var fatal: String? { context.fatalError.withLock { $0 } }

    /// Hands `count` messages to librdkafka in order, each made by `message` just before it is
    /// handed over (librdkafka copies it, so a batch's messages never exist all at once); their
    /// reports arrive in the returned `DeliveryReports`. Messages handed over one after another
    /// keep their order per partition (idempotence preserves it across retries).
    func produce(count: Int, message: (Int) -> KafkaMessage) async -> DeliveryReports {
        let reports = DeliveryReports(count: count)
        guard !closed.load(ordering: .relaxed) else {
            reports.recordMissing(.failed(code: RD_KAFKA_RESP_ERR__DESTROY.rawValue, message: "the producer is closed", kind: .retriable))
            return reports
        }
        guard count > 0 else { return reports }
        let batch = context.register(reports)
        var topic: (name: String, handle: OpaquePointer?) = ("", nil)
        for index in 0..<count {
            let message = message(index)
            let opaque = ProducerContext.opaque(batch: batch, index: index)
            if topic.handle == nil || topic.name != message.topic { topic = (message.topic, self.topic(message.topic)) }
            while let error = produce(message, to: topic.handle, opaque: opaque) {
                if error.code == RD_KAFKA_RESP_ERR__QUEUE_FULL {
                    // librdkafka's queue is bounded; delivery reports make room.
                    try? await Task.sleep(for: .milliseconds(5))
                    continue
                }
                context.complete(opaque, with: .failed(code: error.code.rawValue, message: error.text, kind: Self.classify(error.code)))
                break
            }
        }
        return reports
    }

    /// The handle of a topic; nil when librdkafka refuses the name (the message then names its
    /// topic, and librdkafka's error says why).
    private func topic(_ name: String) -> OpaquePointer? {
        topics.withLock { topics in
            if let known = topics[name] { return known.pointer }
            guard let created = rd_kafka_topic_new(handle.pointer, name, nil) else { return nil }
            topics[name] = TopicHandle(pointer: created)
            return created
        }
    }

    /// Hands one message to librdkafka, which copies it; the error when it did not take it.
    private func produce(_ message: KafkaMessage, to topicHandle: OpaquePointer?, opaque: UInt) -> (code: rd_kafka_resp_err_t, text: String)? {
        let headers = rd_kafka_headers_new(message.headers.count)
        message.headers.forEach { headerName, headerValue in
            // Lengths given: a small string handed over as a C string is copied to the heap first.
            Self.withUTF8(headerName) { name in
                Self.withUTF8(headerValue) { value in
                    name.withMemoryRebound(to: CChar.self) { name in
                        _ = rd_kafka_header_add(headers, name.baseAddress, name.count, value.baseAddress, value.count)
                    }
                }
            }
        }
        let error: OpaquePointer? = message.topic.withCString { topic in
            var key = message.key
            return key.withUTF8 { key in
                message.value.withUnsafeReadableBytes { value in
                    withUnsafeTemporaryAllocation(of: rd_kafka_vu_t.self, capacity: 6) { arguments in
                        arguments.initialize(repeating: rd_kafka_vu_t())
                        if let topicHandle {
                            arguments[0].vtype = RD_KAFKA_VTYPE_RKT
                            arguments[0].u.rkt = topicHandle
                        } else {
                            arguments[0].vtype = RD_KAFKA_VTYPE_TOPIC
                            arguments[0].u.cstr = topic
                        }
                        arguments[1].vtype = RD_KAFKA_VTYPE_KEY
                        arguments[1].u.mem.ptr = UnsafeMutableRawPointer(mutating: key.baseAddress)
                        arguments[1].u.mem.size = key.count
                        arguments[2].vtype = RD_KAFKA_VTYPE_VALUE
                        arguments[2].u.mem.ptr = UnsafeMutableRawPointer(mutating: value.baseAddress)
                        arguments[2].u.mem.size = value.count
                        arguments[3].vtype = RD_KAFKA_VTYPE_HEADERS
                        arguments[3].u.headers = headers
                        arguments[4].vtype = RD_KAFKA_VTYPE_OPAQUE
                        arguments[4].u.ptr = UnsafeMutableRawPointer(bitPattern: opaque)
                        arguments[5].vtype = RD_KAFKA_VTYPE_MSGFLAGS
                        arguments[5].u.i = RD_KAFKA_MSG_F_COPY
                        return rd_kafka_produceva(handle.pointer, arguments.baseAddress, arguments.count)
                    }
                }
            }
        }
        guard let error else { return nil }
        // Not taken: the headers are still ours.
        rd_kafka_headers_destroy(headers)
        defer { rd_kafka_error_destroy(error) }
        return (rd_kafka_error_code(error), String(cString: rd_kafka_error_string(error)))
    }

    /// A string's UTF-8 bytes, without copying the string when they are contiguous already.
    private static func withUTF8<Result>(_ string: String, _ body: (UnsafeBufferPointer<UInt8>) -> Result) -> Result {
        if let result = string.utf8.withContiguousStorageIfAvailable(body) { return result }
        var string = string
        return string.withUTF8(body)
    }

    /// Waits (off the cooperative pool) until every message in flight has its delivery report,
    /// or `timeout` has passed, then stops polling and frees the handle.
    func close(timeout: Duration) async {
        guard !closed.exchange(true, ordering: .relaxed) else { return }
        let handle = self.handle
        let milliseconds = Int32(timeout.components.seconds * 1000)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread {
                _ = rd_kafka_flush(handle.pointer, milliseconds)
                continuation.resume()
            }.start()
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            poll.stopped.withLock { $0 = continuation }
            poll.running.store(false, ordering: .relaxed)
        }
        for topic in topics.withLock({ topics in defer { topics.removeAll() }; return Array(topics.values) }) {
            rd_kafka_topic_destroy(topic.pointer)
        }
        rd_kafka_destroy(handle.pointer)
        // Messages the brokers did not confirm in time: not delivered, so sent again after a restart.
        context.completeAll(with: .failed(code: RD_KAFKA_RESP_ERR__DESTROY.rawValue, message: "the producer closed before the brokers confirmed",
                                          kind: .retriable))
        Unmanaged<ProducerContext>.fromOpaque(UnsafeRawPointer(bitPattern: opaque)!).release()
    }
}
