import BridgeCheckpoint
import BridgeCore
import FileSink
import Foundation
import KubeModel
import Logging
import NIOCore
import Synchronization
import Testing
import TestSupport

@Suite("Bounded buffer")
struct BoundedBufferTests {
    @Test("a full buffer holds producers until the consumer makes room; the byte bound counts too")
    func bounds() async throws {
        let buffer = BoundedBuffer<Int>(maxCount: 3, maxBytes: 100)
        for value in 0..<3 { try await buffer.push(value, bytes: 10) }
        let pushed = Mutex(false)
        let producer = Task {
            try await buffer.push(3, bytes: 10)
            pushed.withLock { $0 = true }
        }
        try await Task.sleep(for: .milliseconds(100))
        #expect(!pushed.withLock { $0 }, "the fourth element waits")
        let first = await buffer.take(maxCount: 2, maxBytes: 1000)
        #expect(first == [0, 1])
        try await producer.value
        #expect(pushed.withLock { $0 })
        #expect(await buffer.take(maxCount: 10, maxBytes: 1000) == [2, 3])
        // Bytes: 60 + 50 does not fit in 100, but an oversized element gets in when the buffer is empty.
        try await buffer.push(10, bytes: 60)
        let waiting = Task { try await buffer.push(11, bytes: 50) }
        try await Task.sleep(for: .milliseconds(50))
        #expect(buffer.count == 1)
        _ = await buffer.take(maxCount: 1, maxBytes: 1000)
        try await waiting.value
        _ = await buffer.take(maxCount: 1, maxBytes: 1000)
        try await buffer.push(12, bytes: 500)
        #expect(buffer.count == 1)
    }

    @Test("closing drains what is left, then the consumer gets nil and producers an error")
    func closing() async throws {
        let buffer = BoundedBuffer<Int>(maxCount: 1, maxBytes: 100)
        try await buffer.push(1, bytes: 1)
        let blocked = Task { try await buffer.push(2, bytes: 1) }
        try await Task.sleep(for: .milliseconds(50))
        buffer.close()
        await #expect(throws: BoundedBuffer<Int>.Closed.self) { try await blocked.value }
        #expect(await buffer.take(maxCount: 5, maxBytes: 100) == [1])
        #expect(await buffer.take(maxCount: 5, maxBytes: 100) == nil)
    }
}

/// A sink that answers with a script of outcomes, for the pipeline's own logic.
final class ScriptedSink: Sink {
    let name = "scripted"
    private let script: Mutex<[DeliveryOutcome]>
    let received = Mutex<[String]>([])

    init(_ script: [DeliveryOutcome]) {
        self.script = Mutex(script)
    }

    func deliver(_ batch: [OutboundEvent]) async -> [DeliveryOutcome] {
        received.withLock { $0 += batch.map(\.envelope.id) }
        return batch.map { _ in script.withLock { $0.isEmpty ? .delivered : $0.removeFirst() } }
    }

    func close() async throws {}
}

/// A sink that takes batches at once and confirms each when the test releases it, failing the
/// first attempt of the events named in `failOnce`.
final class ConfirmLaterSink: Sink {
    let name = "confirm-later"
    let sent = Mutex<[[String]]>([])
    private let releases = Mutex<(released: Int, waiting: [Int: CheckedContinuation<Void, Never>])>((0, [:]))
    private let failOnce: Mutex<Set<String>>

    init(failOnce: Set<String> = []) {
        self.failOnce = Mutex(failOnce)
    }

    func deliver(_ batch: [OutboundEvent]) async -> [DeliveryOutcome] {
        await send(batch).outcomes()
    }

    func send(_ batch: [OutboundEvent]) async -> PendingDelivery {
        let number = sent.withLock { sent in
            sent.append(batch.map(\.envelope.id))
            return sent.count
        }
        let outcomes = batch.map { event -> DeliveryOutcome in
            failOnce.withLock { $0.remove(event.envelope.id) } == nil ? .delivered : .retriable("not now")
        }
        return PendingDelivery { [self] in
            await withCheckedContinuation { continuation in
                let released = releases.withLock { state in
                    if state.released >= number { return true }
                    state.waiting[number] = continuation
                    return false
                }
                if released { continuation.resume() }
            }
            return outcomes
        }
    }

    /// Confirms every batch sent so far and the next `more`.
    func release(more: Int = 0) {
        let ready = releases.withLock { state in
            state.released = sent.withLock { $0.count } + more
            let ready = state.waiting.filter { $0.key <= state.released }
            for number in ready.keys { state.waiting[number] = nil }
            return Array(ready.values)
        }
        for continuation in ready { continuation.resume() }
    }

    func close() async throws {}
}

@Suite("Pipelines, the file sink and checkpoints")
struct DeliveryTests {
    static let scope = WatchScope(GroupVersionResource("core/v1/configmaps")!)

    static func event(_ name: String, rv: String, ledger: inout DeliveryLedger) throws -> OutboundEvent {
        var meta = ObjectMeta()
        meta.apiVersion = "v1"
        meta.kind = "ConfigMap"
        meta.name = name
        meta.namespace = "default"
        meta.uid = "uid-\(name)"
        meta.resourceVersion = rv
        let change = Change(type: .added, scope: scope, object: KubeObject(metadata: meta, bytes: ByteBuffer(string: #"{"kind":"ConfigMap","metadata":{"name":"\#(name)"}}"#)))
        let token = try #require(ledger.received(.change(change), at: .zero).token)
        return OutboundEvent(envelope: try EnvelopeBuilder().envelope(for: change, receivedAt: Date()), token: token,
                             resource: change.resource, namespace: "default")
    }

    static var fastOptions: Pipeline.Options {
        var options = Pipeline.Options()
        options.retry = Backoff(initial: .milliseconds(10), maximum: .milliseconds(20))
        return options
    }

    @Test("retriable failures are retried on the backoff's schedule until delivered; rejected events go to the dead-letter file and count as delivered")
    func retriesAndDeadLetters() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let deadLetterPath = directory.appendingPathComponent("dead-letters.jsonl").path
        let sink = ScriptedSink([.retriable("broker away"), .rejected("too large"), .retriable("still away")])
        let acknowledged = Mutex<[UInt64]>([])
        let clock = ManualClock()
        var options = Pipeline.Options()
        options.retry = Backoff(initial: .seconds(1), maximum: .seconds(4))
        options.linger = .milliseconds(5)
        let pipeline = Pipeline(sink: sink, index: 0, options: options, deadLetters: try DeadLetterFile(path: deadLetterPath),
                                timekeeper: Timekeeper(clock), logger: Logger(label: "test")) { tokens, _ in acknowledged.withLock { $0 += tokens.map(\.sequence) } }
        var ledger = DeliveryLedger(sinkCount: 1)
        for name in ["a", "b"] { try await pipeline.enqueue(try Self.event(name, rv: name == "a" ? "1" : "2", ledger: &ledger)) }
        pipeline.finish()
        try await clock.drive(step: .seconds(10)) { try await pipeline.run() }
        let slept = clock.requestedSleeps
        #expect(slept.count == 3, "\(slept)")
        #expect(slept.first == .milliseconds(5), "the batch lingers first")
        for (duration, base) in zip(slept.dropFirst(), [1.0, 2.0]) { #expect(duration >= .seconds(base / 2) && duration <= .seconds(base), "\(slept)") }
        #expect(acknowledged.withLock { $0.sorted() } == [0, 1])
        #expect(pipeline.deadLettered == 1)
        #expect(pipeline.retried == 2)
        let deadLetters = try String(contentsOfFile: deadLetterPath, encoding: .utf8)
        #expect(deadLetters.contains(#""reason":"too large""#))
        #expect(deadLetters.contains(#""id":"uid-b/2""#))
        // a failed, then b was rejected while a failed again, then a went through: a was sent three times, b once.
        #expect(sink.received.withLock { $0 } == ["uid-a/1", "uid-b/2", "uid-a/1", "uid-a/1"])
    }

    @Test("a fatal sink error stops the pipeline with SinkStopped, without acknowledging")
    func fatal() async throws {
        let acknowledged = Mutex(0)
        let pipeline = Pipeline(sink: ScriptedSink([.fatal("disk full")]), index: 0, options: Self.fastOptions, deadLetters: nil,
                                logger: Logger(label: "test")) { tokens, _ in acknowledged.withLock { $0 += tokens.count } }
        var ledger = DeliveryLedger(sinkCount: 1)
        try await pipeline.enqueue(try Self.event("a", rv: "1", ledger: &ledger))
        let error = await #expect(throws: SinkStopped.self) { try await pipeline.run() }
        #expect(error?.reason == "disk full")
        #expect(pipeline.status == .stopped("disk full"))
        #expect(acknowledged.withLock { $0 } == 0)
    }

    @Test("batches go out before the earlier ones are confirmed; a failure holds the object's later changes, in later batches too")
    func batchesInFlight() async throws {
        var options = Self.fastOptions
        options.batchSize = 2
        options.linger = .zero
        options.batchesInFlight = 3
        let sink = ConfirmLaterSink(failOnce: ["uid-a/1"])
        let acknowledged = Mutex<[String]>([])
        var ledger = DeliveryLedger(sinkCount: 1)
        var events: [OutboundEvent] = []
        for (name, rv) in [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("d", "5"), ("e", "6"), ("f", "7")] {
            events.append(try Self.event(name, rv: rv, ledger: &ledger))
        }
        let ids = Dictionary(uniqueKeysWithValues: events.map { ($0.token.sequence, $0.envelope.id) })
        let pipeline = Pipeline(sink: sink, index: 0, options: options, deadLetters: nil, logger: Logger(label: "test")) { tokens, _ in
            acknowledged.withLock { $0 += tokens.map { ids[$0.sequence]! } }
        }
        for event in events { try await pipeline.enqueue(event) }
        pipeline.finish()
        let running = Task { try await pipeline.run() }
        // Three batches in flight, none confirmed.
        try await waitUntil { sink.sent.withLock { $0.count } >= 3 }
        try await Task.sleep(for: .milliseconds(50))
        #expect(sink.sent.withLock { $0 } == [["uid-a/1", "uid-b/2"], ["uid-a/3", "uid-c/4"], ["uid-d/5", "uid-e/6"]])
        #expect(acknowledged.withLock { $0 }.isEmpty)
        sink.release(more: 10)
        try await running.value
        // a/1 failed: a/3, confirmed meanwhile, goes again after it, so a's last record is a/3.
        #expect(sink.sent.withLock { $0 } == [["uid-a/1", "uid-b/2"], ["uid-a/3", "uid-c/4"], ["uid-d/5", "uid-e/6"],
                                              ["uid-a/1", "uid-a/3"], ["uid-f/7"]])
        #expect(acknowledged.withLock { $0 } == ["uid-b/2", "uid-c/4", "uid-d/5", "uid-e/6", "uid-a/1", "uid-a/3", "uid-f/7"])
        #expect(pipeline.delivered == 7)
    }

    @Test("with batches in flight, an event that arrives while the sink is busy goes out before the earlier batch is confirmed")
    func sentWhileBusy() async throws {
        var options = Self.fastOptions
        options.linger = .zero
        options.batchesInFlight = 2
        let sink = ConfirmLaterSink()
        let acknowledged = Mutex(0)
        let pipeline = Pipeline(sink: sink, index: 0, options: options, deadLetters: nil, logger: Logger(label: "test")) { tokens, _ in
            acknowledged.withLock { $0 += tokens.count }
        }
        var ledger = DeliveryLedger(sinkCount: 1)
        let running = Task { try await pipeline.run() }
        func sentCount(reaching count: Int) async throws -> Int {
            try? await waitUntil { sink.sent.withLock { $0.count } >= count }
            return sink.sent.withLock { $0.count }
        }
        try await pipeline.enqueue(try Self.event("a", rv: "1", ledger: &ledger))
        #expect(try await sentCount(reaching: 1) == 1)
        try await Task.sleep(for: .milliseconds(50))
        try await pipeline.enqueue(try Self.event("b", rv: "2", ledger: &ledger))
        #expect(try await sentCount(reaching: 2) == 2, "b went out while a was still unconfirmed")
        #expect(acknowledged.withLock { $0 } == 0)
        // The window is full now: c waits for a's confirmation.
        try await pipeline.enqueue(try Self.event("c", rv: "3", ledger: &ledger))
        try await Task.sleep(for: .milliseconds(100))
        #expect(sink.sent.withLock { $0.count } == 2)
        sink.release()
        #expect(try await sentCount(reaching: 3) == 3)
        sink.release(more: 10)
        pipeline.finish()
        try await running.value
        #expect(sink.sent.withLock { $0 } == [["uid-a/1"], ["uid-b/2"], ["uid-c/3"]])
        #expect(acknowledged.withLock { $0 } == 3)
    }

    @Test("the file sink writes one structured event per line, and rotates by size")
    func fileSink() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        var options = FileSink.Options(path: directory.appendingPathComponent("{group}-{resource}.jsonl").path)
        options.maxFileBytes = 2000
        options.keepFiles = 2
        let sink = FileSink(options: options)
        var ledger = DeliveryLedger(sinkCount: 1)
        var events: [OutboundEvent] = []
        for index in 0..<12 { events.append(try Self.event("cm-\(index)", rv: "\(index + 1)", ledger: &ledger)) }
        for chunk in stride(from: 0, to: events.count, by: 3) {
            let outcomes = await sink.deliver(Array(events[chunk..<min(chunk + 3, events.count)]))
            #expect(outcomes.allSatisfy { $0 == .delivered })
        }
        try await sink.close()
        let base = directory.appendingPathComponent("core-configmaps.jsonl").path
        #expect(FileManager.default.fileExists(atPath: base + ".1"))
        #expect(FileManager.default.fileExists(atPath: base + ".2"))
        #expect(!FileManager.default.fileExists(atPath: base + ".3"), "only keepFiles rotated files stay")
        let lines = try String(contentsOfFile: base + ".1", encoding: .utf8).split(separator: "\n")
        for line in lines {
            let event = try #require(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            #expect(event["specversion"] as? String == "1.0")
            #expect((event["data"] as? [String: Any])?["kind"] as? String == "ConfigMap")
        }
    }

    @Test("a full disk or a path that cannot be written is fatal, with the path and what happened", arguments: [
        ("/dev/full", "the disk is full"), ("/sys/kernel/kubebridge-events.jsonl", "failed"),
    ])
    func unwritable(path: String, expected: String) async throws {
        let sink = FileSink(options: FileSink.Options(path: path))
        var ledger = DeliveryLedger(sinkCount: 1)
        let outcomes = await sink.deliver([try Self.event("a", rv: "1", ledger: &ledger)])
        guard case .fatal(let message) = outcomes.first else {
            Issue.record("expected a fatal outcome, got \(outcomes)")
            return
        }
        #expect(message.contains(path))
        #expect(message.contains(expected))
        try await sink.close()
    }

    /// A checkpoint store whose `record` waits until the test opens the gate.
    final class GatedStore: CheckpointStore {
        let base: SQLiteCheckpointStore
        let gate = Mutex<(open: Bool, waiting: [CheckedContinuation<Void, Never>], calls: Int)>((false, [], 0))
        init(_ base: SQLiteCheckpointStore) { self.base = base }
        func load() async throws -> [WatchScope: Checkpoint] { try await base.load() }
        func save(_ deltas: [CheckpointDelta]) async throws { try await base.save(deltas) }
        func close() async throws { try await base.close() }
        func record(_ objects: [UnrecordedObject]) async throws {
            await withCheckedContinuation { continuation in
                let open = gate.withLock { gate in
                    gate.calls += 1
                    if !gate.open { gate.waiting.append(continuation) }
                    return gate.open
                }
                if open { continuation.resume() }
            }
            try await base.record(objects)
        }
        func open() {
            for waiter in gate.withLock({ gate in gate.open = true; defer { gate.waiting = [] }; return gate.waiting }) { waiter.resume() }
        }
    }

    @Test("a sink sees a new object only once its checkpoint row is on disk")
    func recordedBeforeDelivery() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("checkpoints.sqlite").path
        let store = GatedStore(try SQLiteCheckpointStore(path: path))
        let sink = ScriptedSink([])
        let ledger = Ledger(store: store, sinkCount: 1, logger: Logger(label: "test"))
        let bridge = Bridge(sinks: [(sink, Self.fastOptions)], envelopes: EnvelopeBuilder(), ledger: ledger, deadLetters: nil,
                            logger: Logger(label: "test"))
        let running = Task { try await bridge.run() }
        var meta = ObjectMeta()
        meta.apiVersion = "v1"
        meta.kind = "ConfigMap"
        meta.name = "a"
        meta.namespace = "default"
        meta.uid = "uid-a"
        meta.resourceVersion = "1"
        let change = Change(type: .added, scope: Self.scope, object: KubeObject(metadata: meta, bytes: ByteBuffer(string: #"{"kind":"ConfigMap"}"#)),
                            unrecorded: true)
        try await bridge.accept(.change(change))
        try await waitUntil { store.gate.withLock { $0.calls } == 1 }
        try await Task.sleep(for: .milliseconds(100))
        #expect(sink.received.withLock { $0 }.isEmpty)
        store.open()
        try await waitUntil { sink.received.withLock { $0 } == ["uid-a/1"] }
        let loaded = try await store.load()
        #expect(loaded[Self.scope]?.known["uid-a"]?.stored == true)
        bridge.finish()
        try await running.value
    }

    @Test("a sink's filter: it sees only the events it takes, and the others count as acknowledged by it, so the watermark moves")
    func sinkFilters() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try SQLiteCheckpointStore(path: directory.appendingPathComponent("checkpoints.sqlite").path)
        let (all, systemOnly) = (ScriptedSink([]), ScriptedSink([]))
        var filtered = Self.fastOptions
        filtered.filter.includeNamespaces = ["kube-*"]
        filtered.filter.changeTypes = [.added, .deleted]
        let ledger = Ledger(store: store, sinkCount: 2, logger: Logger(label: "test"))
        let bridge = Bridge(sinks: [(all, Self.fastOptions), (systemOnly, filtered)], envelopes: EnvelopeBuilder(), ledger: ledger,
                            deadLetters: nil, logger: Logger(label: "test"))
        let running = Task { try await bridge.run() }
        for (version, (namespace, type)) in [("default", ChangeType.added), ("kube-system", .added), ("kube-system", .modified), ("default", .deleted)].enumerated() {
            var meta = ObjectMeta()
            meta.apiVersion = "v1"
            meta.kind = "ConfigMap"
            meta.name = "cm"
            meta.namespace = namespace
            meta.uid = "uid-\(namespace)"
            meta.resourceVersion = "\(version + 1)"
            try await bridge.accept(.change(Change(type: type, scope: Self.scope, object: KubeObject(metadata: meta, bytes: ByteBuffer(string: "{}")))))
        }
        try await waitUntil(timeout: .seconds(60)) { all.received.withLock { $0 }.count == 4 && bridge.watermark(of: Self.scope) == "4" }
        #expect(systemOnly.received.withLock { $0 } == ["uid-kube-system/2"])
        bridge.finish()
        try await running.value
        try await store.close()
    }

    @Test("the ledger merges what the sinks confirmed and saves it; a store reopened gives it back")
    func ledgerSaves() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("checkpoints.sqlite").path
        let store = try SQLiteCheckpointStore(path: path)
        let ledger = Ledger(store: store, sinkCount: 1, logger: Logger(label: "test"))
        var tokens: [DeliveryLedger.Token] = []
        for (name, rv) in [("a", "1"), ("b", "2")] {
            var meta = ObjectMeta()
            (meta.apiVersion, meta.kind, meta.name, meta.namespace, meta.uid, meta.resourceVersion) = ("v1", "ConfigMap", name, "default", "uid-\(name)", rv)
            tokens.append(try #require(ledger.received(.change(Change(type: .added, scope: Self.scope, object: KubeObject(metadata: meta, bytes: ByteBuffer())))).token))
        }
        ledger.acknowledged(tokens, sink: 0)
        try await ledger.flush()
        try await store.close()
        let loaded = try await SQLiteCheckpointStore(path: path).load()
        #expect(loaded[Self.scope]?.resourceVersion == "2")
        #expect(loaded[Self.scope]?.known.entries.keys.sorted() == ["uid-a", "uid-b"])
        #expect(loaded[Self.scope]?.known.kind == "ConfigMap")
    }
}

@Suite("Durable appends")
struct DurableAppenderTests {
    @Test("a line left unfinished by a crash is cut before appending, so no two events merge")
    func unfinishedLine() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("events.jsonl").path
        try "{\"id\":1}\n{\"id\":2}\n{\"id\":3,\"da".write(toFile: path, atomically: true, encoding: .utf8)
        let appender = try DurableAppender(path: path)
        try await appender.append([ByteBuffer(string: "{\"id\":3}\n")])
        try await appender.close()
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n")
    }
}
