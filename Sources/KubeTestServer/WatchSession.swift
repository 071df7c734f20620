import NIOCore
import NIOHTTP1

/// One open watch stream. It reads the storage's log through a cursor and writes only while the
/// connection is writable, so a slow client holds the server back through TCP, as with a real
/// apiserver, instead of growing a buffer.
final class WatchSession {
    let state: APIServerState
    let plan: WatchPlan
    let context: ChannelHandlerContext
    private let onEnd: () -> Void
    private(set) var cursor: Int
    private var pendingInitial: ArraySlice<StoredObject>
    private var pendingInitialEnd: Bool
    private var finished = false
    private(set) var eventsSent = 0
    private var malformedSent = false
    private var timers: [Scheduled<Void>] = []
    private var periodicBookmark: Scheduled<Void>?
    /// A bookmark fell due while bookmarks were paused.
    private var bookmarkDue = false

    init(state: APIServerState, plan: WatchPlan, context: ChannelHandlerContext, onEnd: @escaping () -> Void) {
        self.state = state
        self.plan = plan
        self.context = context
        self.onEnd = onEnd
        self.cursor = plan.startSequence
        self.pendingInitial = plan.initialObjects[...]
        self.pendingInitialEnd = plan.sendInitialEventsEnd
    }

    func start() {
        if let errorLine = plan.errorLine {
            var buffer = context.channel.allocator.buffer(capacity: 256)
            buffer.writeBytes(Array(#"{"type":"ERROR","object":"#.utf8))
            buffer.writeBytes(errorLine.serialized())
            buffer.writeBytes(Array("}\n".utf8))
            context.writeAndFlush(NIOAny(HTTPServerResponsePart.body(.byteBuffer(buffer))), promise: nil)
            finish()
            return
        }
        plan.store.watchers[ObjectIdentifier(self)] = self
        state.allSessions[ObjectIdentifier(self)] = self
        let loop = context.eventLoop.assumeIsolated()
        schedulePeriodicBookmark()
        if let timeout = plan.timeout {
            let lead = state.options.bookmarkBeforeTimeout
            if timeout > lead {
                timers.append(loop.scheduleTask(in: timeout - lead) { [weak self] in self?.sendBookmarkIfDue() })
            }
            timers.append(loop.scheduleTask(in: timeout) { [weak self] in self?.finish() })
        }
        pump()
    }

    private func schedulePeriodicBookmark() {
        periodicBookmark = context.eventLoop.assumeIsolated().scheduleTask(in: state.options.bookmarkInterval) { [weak self] in
            guard let self, !self.finished else { return }
            self.sendBookmarkIfDue()
            self.schedulePeriodicBookmark()
        }
    }

    private var isStalled: Bool {
        if case .stallWatch = plan.fault { return true }
        return false
    }

    /// Writes what is due while the connection takes it.
    func pump() {
        guard !finished, !isStalled else { return }
        let channel = context.channel
        var buffer = channel.allocator.buffer(capacity: 16 * 1024)
        while channel.isWritable, buffer.readableBytes < 64 * 1024 {
            if let object = pendingInitial.popFirst() {
                if !appendEvent("ADDED", object: object, to: &buffer) { return }
            } else if pendingInitialEnd {
                pendingInitialEnd = false
                appendBookmark(revision: plan.startRevision, initialEventsEnd: true, to: &buffer)
            } else if cursor < plan.store.log.endSequence {
                if cursor < plan.store.log.firstSequence {
                    // The window moved past this reader; the real cache ends such watches with 410.
                    let status = ObjectRules.status(code: 410, reason: "Expired", message: "too old resource version")
                    buffer.writeBytes(Array(#"{"type":"ERROR","object":"#.utf8) + status.serialized() + Array("}\n".utf8))
                    write(buffer)
                    finish()
                    return
                }
                let entry = plan.store.log.entry(at: cursor)
                cursor += 1
                guard let type = visibleType(of: entry) else { continue }
                if !appendEvent(type, object: entry.object, to: &buffer) { return }
            } else {
                break
            }
        }
        if buffer.readableBytes > 0 { write(buffer) }
    }

    /// What this watcher sees of a change: label selectors turn changes that make an object match
    /// or stop matching into ADDED and DELETED.
    private func visibleType(of entry: LogEntry) -> String? {
        if let namespace = plan.namespace, entry.object.namespace != namespace { return nil }
        func matches(_ object: StoredObject?) -> Bool {
            guard let object else { return false }
            if let selector = plan.labelSelector, !selector.matches(object.labels) { return false }
            if let selector = plan.fieldSelector, !selector.matches(object) { return false }
            return true
        }
        let now = matches(entry.object)
        switch entry.type {
        case .added: return now ? "ADDED" : nil
        case .deleted: return now ? "DELETED" : nil
        case .modified:
            let before = matches(entry.previous)
            switch (before, now) {
            case (true, true): return "MODIFIED"
            case (false, true): return "ADDED"
            case (true, false): return "DELETED"
            case (false, false): return nil
            }
        }
    }

    /// Appends one event line; false when a fault ended the stream.
    private func appendEvent(_ type: String, object: StoredObject, to buffer: inout ByteBuffer) -> Bool {
        var line: [UInt8] = []
        line.reserveCapacity(object.bytes.count + 32)
        line += Array(#"{"type":""#.utf8) + Array(type.utf8) + Array(#"","object":"#.utf8)
        line += state.render(object, as: plan.definition)
        line += Array("}\n".utf8)
        if case .cutWatchMidLine(let after, let cleanEnd) = plan.fault, eventsSent >= after {
            buffer.writeBytes(line[0..<(line.count / 2)])
            if cleanEnd {
                write(buffer)
                finish()
            } else {
                finished = true
                cleanup()
                // Closed once the bytes are out: an HTTP/2 stream closed with writes pending is
                // reset at once and its unsent DATA dropped, where a real server has sent them.
                let context = self.context
                context.writeAndFlush(NIOAny(HTTPServerResponsePart.body(.byteBuffer(buffer)))).assumeIsolated().whenComplete { _ in
                    context.close(promise: nil)
                }
            }
            return false
        }
        if case .malformedWatchLine(let after) = plan.fault, eventsSent == after, !malformedSent {
            malformedSent = true
            buffer.writeBytes(Array(#"{"type":"ADDED","object":{"metadata":{"name": oops}}}"#.utf8) + [0x0A])
        }
        buffer.writeBytes(line)
        eventsSent += 1
        return true
    }

    private func appendBookmark(revision: Int64, initialEventsEnd: Bool, to buffer: inout ByteBuffer) {
        var metadata: [(String, JSON)] = [("resourceVersion", .string(String(revision)))]
        if initialEventsEnd {
            metadata.append(("annotations", .object([("k8s.io/initial-events-end", .string("true"))])))
        }
        var object: JSON = .object([
            ("kind", .string(plan.definition.kind)), ("apiVersion", .string(plan.definition.apiVersion)),
            ("metadata", .object(metadata)),
        ])
        if plan.definition.isCustom { object = object.sortedKeys() }
        buffer.writeBytes(Array(#"{"type":"BOOKMARK","object":"#.utf8) + object.serialized() + Array("}\n".utf8))
    }

    /// A bookmark goes out only when the watcher has been sent everything up to the current
    /// revision, and only when that revision is newer than where the watch started, as the real
    /// watch cache does.
    private func sendBookmarkIfDue() {
        if state.bookmarksPaused, !finished {
            bookmarkDue = true
            return
        }
        guard !finished, !isStalled, plan.allowBookmarks, pendingInitial.isEmpty, !pendingInitialEnd,
              cursor == plan.store.log.endSequence, state.revision > plan.startRevision, context.channel.isWritable
        else { return }
        var buffer = context.channel.allocator.buffer(capacity: 128)
        appendBookmark(revision: state.revision, initialEventsEnd: false, to: &buffer)
        write(buffer)
    }

    /// Bookmarks resumed: the one that fell due meanwhile goes out now.
    func sendDueBookmark() {
        guard bookmarkDue else { return }
        bookmarkDue = false
        sendBookmarkIfDue()
    }

    private func write(_ buffer: ByteBuffer) {
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.body(.byteBuffer(buffer))), promise: nil)
    }

    /// Ends the stream cleanly: the chunked body's last chunk, as at timeoutSeconds.
    func finish() {
        guard !finished else { return }
        finished = true
        cleanup()
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)), promise: nil)
        onEnd()
    }

    /// The client went away.
    func cancel() {
        finished = true
        cleanup()
    }

    private func cleanup() {
        for timer in timers { timer.cancel() }
        timers = []
        periodicBookmark?.cancel()
        periodicBookmark = nil
        plan.store.watchers[ObjectIdentifier(self)] = nil
        state.allSessions[ObjectIdentifier(self)] = nil
    }
}
