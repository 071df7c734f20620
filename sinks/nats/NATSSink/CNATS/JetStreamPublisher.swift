import BridgeCore
import CNats
import Foundation
import Logging
import NIOCore
import Synchronization

/// How to reach the NATS servers; no C type crosses this boundary.
struct NATSConnectionSettings: Sendable {
    var servers: [String]
    var token: String?
    var user: String?
    var password: String?
    /// A `.creds` file: a user JWT and its nkey seed.
    var credentialsFile: String?
    /// A user nkey: its public key and the seed file that signs the server's nonce.
    var nkey: (publicKey: String, seedFile: String)?
    var caFile: String?
    /// PubAcks awaited at once; a publish beyond them waits in the library.
    var maxPending: Int = 4096
}

/// What JetStream answered for one message.
enum PublishReport: Sendable, Equatable {
    /// Stored in the stream; `duplicate` when the stream had the message id already.
    case stored(sequence: UInt64, duplicate: Bool)
    /// `refused`: the server answered with a JetStream error (a full stream, say), rather than
    /// the message being lost on the way (a timeout, a dropped connection).
    case failed(String, refused: Bool)
    /// The message cannot be built (an invalid subject or header): it never will be.
    case invalid(String)
}

/// An error from nats.c: the call and the library's words.
struct NATSError: Error, CustomStringConvertible {
    var description: String
    /// The stream is missing (and may not be created) or does not take the subjects: no retry
    /// helps.
    var unusableStream = false

    init(_ call: String, _ status: natsStatus) {
        var text = String(cString: natsStatus_GetText(status))
        var lastStatus = NATS_OK
        if let last = nats_GetLastError(&lastStatus), lastStatus == status {
            // The library's detail starts with its source location, "(conn.c:2088): ".
            var detail = Substring(String(cString: last))
            if detail.hasPrefix("("), let end = detail.range(of: "): ") { detail = detail[end.upperBound...] }
            if !detail.isEmpty, !text.contains(detail) { text += ": \(detail)" }
        }
        description = "\(call): \(text)"
    }

    init(description: String, unusableStream: Bool = false) {
        self.description = description
        self.unusableStream = unusableStream
    }
}

/// Waits for one message's report, which may come before anyone waits.
typealias PublishWaiter = Completion<PublishReport>

/// What the C callbacks need, found through the closure pointer: waiters by message address.
/// The connection holds one reference, given back in its closed callback, the library's last.
final class PublisherContext: Sendable {
    let logger: Logger
    let waiters = Mutex<[UInt: PublishWaiter]>([:])
    /// Set before kubebridge closes the connection, so that the disconnection is not reported.
    let closing = Atomic<Bool>(false)

    init(logger: Logger) {
        self.logger = logger
    }

    func complete(_ message: UInt, with report: PublishReport) {
        waiters.withLock { $0.removeValue(forKey: message) }?.complete(report)
    }

    func completeAll(with report: PublishReport) {
        let left = waiters.withLock { waiters in
            defer { waiters.removeAll() }
            return Array(waiters.values)
        }
        for waiter in left { waiter.complete(report) }
    }
}

struct NATSHandles: @unchecked Sendable {
    let options: OpaquePointer
    let connection: OpaquePointer
    let jetStream: OpaquePointer
}

/// A connection to NATS with a JetStream context that publishes asynchronously. It owns the
/// options, the connection and the context and frees them on `close`. PubAcks are matched to
/// messages by the message's address, which the library hands back to the ack handler; the
/// handler runs on a thread of the library's own.
final class JetStreamPublisher: Sendable {
    let handles: NATSHandles
    let context: PublisherContext
    private let closed = Atomic<Bool>(false)

    init(settings: NATSConnectionSettings, logger: Logger) throws {
        var optionsPointer: OpaquePointer?
        try Self.check("natsOptions_Create", natsOptions_Create(&optionsPointer))
        guard let options = optionsPointer else { throw NATSError(description: "natsOptions_Create returned nothing") }
        do {
            try Self.configure(options, settings)
        } catch {
            natsOptions_Destroy(options)
            throw error
        }
        let context = PublisherContext(logger: logger)
        let retained = Unmanaged.passRetained(context)
        let closure = retained.toOpaque()
        natsOptions_SetDisconnectedCB(options, { _, closure in
            guard let closure else { return }
            let context = Unmanaged<PublisherContext>.fromOpaque(closure).takeUnretainedValue()
            guard !context.closing.load(ordering: .relaxed) else { return }
            context.logger.warning("disconnected from NATS; publishing waits for the reconnection, and nothing is acknowledged meanwhile")
        }, closure)
        natsOptions_SetClosedCB(options, { _, closure in
            guard let closure else { return }
            Unmanaged<PublisherContext>.fromOpaque(closure).release()
        }, closure)
        natsOptions_SetReconnectedCB(options, { _, closure in
            guard let closure else { return }
            Unmanaged<PublisherContext>.fromOpaque(closure).takeUnretainedValue().logger.info("reconnected to NATS")
        }, closure)
        // Servers that are down at start are waited for, as after a disconnection. Anything else
        // (TLS, credentials) fails now: waiting would only hide it.
        var connectionPointer: OpaquePointer?
        var status = natsConnection_Connect(&connectionPointer, options)
        // nats.c 3.4.1 leaves the signature out of its CONNECT when the signature's first byte is
        // 0 (one nonce in 256), and the server refuses the nkey or the credentials. The next
        // connection signs another nonce: a refused signature is tried twice more before it counts.
        var signingAttempts = 1
        while status == NATS_CONNECTION_AUTH_FAILED, settings.nkey != nil || settings.credentialsFile != nil, signingAttempts < 3 {
            signingAttempts += 1
            status = natsConnection_Connect(&connectionPointer, options)
        }
        if status == NATS_NO_SERVER {
            logger.warning("the NATS servers \(settings.servers.joined(separator: ",")) cannot be reached yet; kubebridge keeps trying, and events wait")
            natsOptions_SetRetryOnFailedConnect(options, true, { _, closure in
                guard let closure else { return }
                Unmanaged<PublisherContext>.fromOpaque(closure).takeUnretainedValue().logger.info("connected to NATS")
            }, closure)
            status = natsConnection_Connect(&connectionPointer, options)
        }
        guard status == NATS_OK || status == NATS_NOT_YET_CONNECTED, let connection = connectionPointer else {
            let error = NATSError("connecting to \(settings.servers.joined(separator: ","))", status)
            natsOptions_Destroy(options)
            retained.release()
            throw error
        }
        var jsOptions = jsOptions()
        jsOptions_Init(&jsOptions)
        jsOptions.PublishAsync.MaxPending = Int64(settings.maxPending)
        jsOptions.PublishAsync.AckHandler = { _, message, ack, failure, closure in
            guard let closure, let message else { return }
            let context = Unmanaged<PublisherContext>.fromOpaque(closure).takeUnretainedValue()
            let report: PublishReport
            if let ack {
                report = .stored(sequence: ack.pointee.Sequence, duplicate: ack.pointee.Duplicate)
            } else if let failure {
                let text = failure.pointee.ErrText.map { String(cString: $0) } ?? String(cString: natsStatus_GetText(failure.pointee.Err))
                // A JetStream error code (stream full, wrong sequence...) is the server's answer;
                // anything else (a timeout, a lost connection) may go through when sent again.
                report = .failed("\(text) (JetStream error \(failure.pointee.ErrCode.rawValue))", refused: failure.pointee.ErrCode.rawValue != 0)
            } else {
                report = .failed("no acknowledgement", refused: false)
            }
            context.complete(UInt(bitPattern: message), with: report)
            natsMsg_Destroy(message)
        }
        jsOptions.PublishAsync.AckHandlerClosure = closure
        var jetStreamPointer: OpaquePointer?
        let jsStatus = natsConnection_JetStream(&jetStreamPointer, connection, &jsOptions)
        guard jsStatus == NATS_OK, let jetStream = jetStreamPointer else {
            let error = NATSError("natsConnection_JetStream", jsStatus)
            context.closing.store(true, ordering: .relaxed)
            natsConnection_Destroy(connection)
            natsOptions_Destroy(options)
            throw error
        }
        handles = NATSHandles(options: options, connection: connection, jetStream: jetStream)
        self.context = context
    }

    static func check(_ call: String, _ status: natsStatus) throws {
        guard status == NATS_OK else { throw NATSError(call, status) }
    }

    private static func configure(_ options: OpaquePointer, _ settings: NATSConnectionSettings) throws {
        var servers = settings.servers.map { strdup($0) }
        defer { for server in servers { free(server) } }
        try servers.withUnsafeMutableBufferPointer { buffer in
            try buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: buffer.count) { pointer in
                try check("servers", natsOptions_SetServers(options, pointer, Int32(buffer.count)))
            }
        }
        // Reconnect for ever: while disconnected, the pipeline holds and nothing is acknowledged.
        try check("natsOptions_SetMaxReconnect", natsOptions_SetMaxReconnect(options, -1))
        // A busy server (or machine) may take more than the library's 2 s to answer the handshake.
        try check("natsOptions_SetTimeout", natsOptions_SetTimeout(options, 10_000))
        try check("natsOptions_SetReconnectWait", natsOptions_SetReconnectWait(options, 500))
        // No buffer for publishes while reconnecting (1 byte: the library's least): a message buffered
        // then flushed to the new connection could be stored ahead of earlier changes of its object
        // that were lost with the old one, and their resend would come after it. A publish while
        // disconnected fails at once instead, and the pipeline sends it again in order.
        try check("natsOptions_SetReconnectBufSize", natsOptions_SetReconnectBufSize(options, 1))
        if let token = settings.token { try check("token", natsOptions_SetToken(options, token)) }
        if let user = settings.user { try check("user", natsOptions_SetUserInfo(options, user, settings.password)) }
        if let file = settings.credentialsFile { try check("credentials \(file)", natsOptions_SetUserCredentialsFromFiles(options, file, nil)) }
        if let nkey = settings.nkey { try check("nkey seed \(nkey.seedFile)", natsOptions_SetNKeyFromSeed(options, nkey.publicKey, nkey.seedFile)) }
        if let ca = settings.caFile {
            try check("TLS", natsOptions_SetSecure(options, true))
            try check("CA \(ca)", natsOptions_LoadCATrustedCertificates(options, ca))
        }
    }

    var isConnected: Bool {
        !closed.load(ordering: .relaxed) && natsConnection_Status(handles.connection) == NATS_CONN_STATUS_CONNECTED
    }

    /// What a stream kubebridge creates is like.
    struct StreamSettings: Sendable {
        var name: String
        var subjects: [String]
        var create: Bool
        var duplicateWindow: Duration
        var replicas: Int
        /// 0 limits, 1 interest, 2 work queue (`jsRetentionPolicy`).
        var retention: Int
    }

    /// Adds the stream, or checks that it exists and takes `subjects`; warns when it cannot drop
    /// duplicates. It blocks on a request to the server: call it off the cooperative pool.
    func ensureStream(_ settings: StreamSettings, logger: Logger) throws {
        var info: UnsafeMutablePointer<jsStreamInfo>?
        var code = jsErrCode(rawValue: 0)
        let status = js_GetStreamInfo(&info, handles.jetStream, settings.name, nil, &code)
        if status == NATS_OK, let info {
            defer { jsStreamInfo_Destroy(info) }
            guard let config = info.pointee.Config else { return }
            let filters = (0..<Int(config.pointee.SubjectsLen)).compactMap { config.pointee.Subjects?[$0].map { String(cString: $0) } }
            for subject in settings.subjects where !filters.contains(where: { SubjectToken.filter($0, covers: subject) }) {
                throw NATSError(description: "the JetStream stream \(settings.name) does not take the subjects \(subject) (its subjects: \(filters.joined(separator: ", "))); add them or change the sink's subject template",
                                unusableStream: true)
            }
            if config.pointee.Duplicates == 0 {
                logger.warning("the JetStream stream \(settings.name) has no duplicate window: what kubebridge sends again after a restart is stored twice")
            }
            if settings.create {
                // The stream exists: kubebridge does not change a stream it finds, but says where it differs from the configuration.
                let window = Int64(settings.duplicateWindow.components.seconds) * 1_000_000_000
                var differences: [String] = []
                if config.pointee.Retention.rawValue != UInt32(settings.retention) {
                    let names = NATSSinkOptions.Retention.allCases.map(\.rawValue)
                    let found = Int(config.pointee.Retention.rawValue)
                    differences.append("retention \(found < names.count ? names[found] : "\(found)") (configured \(names[settings.retention]))")
                }
                if config.pointee.Replicas != Int64(settings.replicas) { differences.append("replicas \(config.pointee.Replicas) (configured \(settings.replicas))") }
                if config.pointee.Duplicates != 0, config.pointee.Duplicates != window {
                    differences.append("duplicate window \(config.pointee.Duplicates / 1_000_000_000)s (configured \(window / 1_000_000_000)s)")
                }
                if !differences.isEmpty {
                    logger.warning("the JetStream stream \(settings.name) exists with \(differences.joined(separator: ", ")); kubebridge uses it as it is")
                }
            }
            return
        }
        guard status == NATS_NOT_FOUND else { throw NATSError("stream \(settings.name)", status) }
        guard settings.create else {
            throw NATSError(description: "the JetStream stream \(settings.name) does not exist; create it (subjects \(settings.subjects.joined(separator: ", "))) or set createStream: true",
                            unusableStream: true)
        }
        var config = jsStreamConfig()
        jsStreamConfig_Init(&config)
        var subjectPointers = settings.subjects.map { UnsafePointer(strdup($0)) }
        defer { for pointer in subjectPointers { free(UnsafeMutablePointer(mutating: pointer)) } }
        let created: natsStatus = settings.name.withCString { namePointer in
            subjectPointers.withUnsafeMutableBufferPointer { buffer in
                config.Name = namePointer
                config.Subjects = buffer.baseAddress
                config.SubjectsLen = Int32(buffer.count)
                config.Storage = js_FileStorage
                config.Retention = jsRetentionPolicy(rawValue: UInt32(settings.retention))
                config.Duplicates = Int64(settings.duplicateWindow.components.seconds) * 1_000_000_000
                config.Replicas = Int64(settings.replicas)
                return js_AddStream(&info, handles.jetStream, &config, nil, &code)
            }
        }
        try Self.check("creating the stream \(settings.name)", created)
        jsStreamInfo_Destroy(info)
    }

    /// Hands a message to the library; the waiter completes with its PubAck. Messages handed over
    /// one after another are sent in order.
    func publish(subject: String, headers: [(name: String, value: String)], data: ByteBuffer) -> PublishWaiter {
        let waiter = PublishWaiter()
        guard !closed.load(ordering: .relaxed) else {
            waiter.complete(.failed("the NATS connection is closed", refused: false))
            return waiter
        }
        var messagePointer: OpaquePointer?
        let created = data.withUnsafeReadableBytes { bytes in
            natsMsg_Create(&messagePointer, subject, nil, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), Int32(bytes.count))
        }
        guard created == NATS_OK, let message = messagePointer else {
            waiter.complete(.invalid(NATSError("natsMsg_Create for \(subject)", created).description))
            return waiter
        }
        for header in headers {
            let status = natsMsgHeader_Set(message, header.name, header.value)
            if status != NATS_OK {
                natsMsg_Destroy(message)
                waiter.complete(.invalid(NATSError("header \(header.name)", status).description))
                return waiter
            }
        }
        let key = UInt(bitPattern: message)
        context.waiters.withLock { $0[key] = waiter }
        var owned: OpaquePointer? = message
        let status = js_PublishMsgAsync(handles.jetStream, &owned, nil)
        if status != NATS_OK {
            context.waiters.withLock { _ = $0.removeValue(forKey: key) }
            natsMsg_Destroy(owned)
            waiter.complete(.failed(NATSError("publishing to \(subject)", status).description, refused: false))
        }
        return waiter
    }

    /// Waits (off the cooperative pool) for the PubAcks still due, at most `timeout`, then closes
    /// the connection and frees everything.
    func close(timeout: Duration) async {
        guard !closed.exchange(true, ordering: .relaxed) else { return }
        let handles = self.handles
        let context = self.context
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread {
                var options = jsPubOptions()
                jsPubOptions_Init(&options)
                options.MaxWait = Int64(timeout.components.seconds * 1000)
                _ = js_PublishAsyncComplete(handles.jetStream, &options)
                jsCtx_Destroy(handles.jetStream)
                context.closing.store(true, ordering: .relaxed)
                natsConnection_Close(handles.connection)
                natsConnection_Destroy(handles.connection)
                natsOptions_Destroy(handles.options)
                context.completeAll(with: .failed("the NATS connection closed before the acknowledgement", refused: false))
                continuation.resume()
            }.start()
        }
    }
}
