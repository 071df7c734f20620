import BridgeCore
import KubeModel
import NIOCore
import Synchronization
import Testing
import TestSupport

@Suite("DeliveryLedger: watermarks, early rows and saves")
struct DeliveryLedgerTests {
    static let scope = WatchScope(GroupVersionResource("core/v1/configmaps")!)
    static let other = WatchScope(GroupVersionResource("apps/v1/deployments")!)

    static func change(_ name: String, rv: String, type: ChangeType = .modified, scope: WatchScope = scope, unrecorded: Bool = false) -> ResourceEvent {
        var meta = ObjectMeta()
        meta.name = name
        meta.namespace = "default"
        meta.uid = "uid-\(name)"
        meta.resourceVersion = rv
        meta.kind = "ConfigMap"
        meta.apiVersion = "v1"
        return .change(Change(type: type, scope: scope, object: KubeObject(metadata: meta, bytes: ByteBuffer()), unrecorded: unrecorded))
    }

    /// Receives `events`, then lets every sink acknowledge the changes in `order` (indexes into
    /// the changes received).
    static func run(_ ledger: inout DeliveryLedger, _ events: [ResourceEvent]) -> [DeliveryLedger.Token] {
        events.compactMap { ledger.received($0, at: .zero).token }
    }

    static func acknowledgeAll(_ ledger: inout DeliveryLedger, _ tokens: [DeliveryLedger.Token]) -> [DeliveryLedger.Action] {
        tokens.flatMap { token in (0..<ledger.sinkCount).flatMap { ledger.acknowledged(token, sink: $0) } }
    }

    /// The deltas the next save writes (the interval having passed), reported saved.
    static func save(_ ledger: inout DeliveryLedger, at now: Duration = .seconds(3600)) -> [WatchScope: CheckpointDelta] {
        var deltas: [WatchScope: CheckpointDelta] = [:]
        for case .save(let saved) in ledger.tick(at: now) {
            for delta in saved { deltas[delta.scope] = delta }
            _ = ledger.saveSucceeded()
        }
        return deltas
    }

    @Test("the watermark moves only past changes every sink acknowledged, in arrival order")
    func orderedWatermark() throws {
        var ledger = DeliveryLedger(sinkCount: 2)
        let tokens = Self.run(&ledger, [Self.change("a", rv: "1"), Self.change("b", rv: "2"), Self.change("c", rv: "3")])
        let (a, b, c) = (tokens[0], tokens[1], tokens[2])
        // Out of order, and one sink at a time.
        for (token, sink) in [(b, 0), (b, 1), (c, 1), (a, 1)] {
            #expect(ledger.acknowledged(token, sink: sink).isEmpty)
            #expect(ledger.watermark(of: Self.scope) == nil, "a is not acknowledged by every sink: nothing may be checkpointed")
        }
        _ = ledger.acknowledged(a, sink: 0)
        #expect(ledger.watermark(of: Self.scope) == "2")
        #expect(ledger.unconfirmed(in: Self.scope) == 1)
        let saved = Self.save(&ledger)
        #expect(saved[Self.scope]?.resourceVersion == "2")
        #expect(saved[Self.scope]?.upserts.keys.sorted() == ["uid-a", "uid-b"])
        _ = ledger.acknowledged(c, sink: 0)
        #expect(ledger.watermark(of: Self.scope) == "3")
    }

    @Test("progress enters acknowledged: a quiet scope's watermark moves with bookmarks, but never past a pending change")
    func progress() throws {
        var ledger = DeliveryLedger(sinkCount: 1)
        _ = ledger.received(.progress(Self.scope, resourceVersion: "10"), at: .zero)
        #expect(ledger.watermark(of: Self.scope) == "10")
        let token = try #require(ledger.received(Self.change("a", rv: "11"), at: .zero).token)
        _ = ledger.received(.progress(Self.scope, resourceVersion: "15"), at: .zero)
        #expect(ledger.watermark(of: Self.scope) == "10")
        _ = ledger.acknowledged(token, sink: 0)
        #expect(ledger.watermark(of: Self.scope) == "15")
        #expect(Self.save(&ledger)[Self.scope]?.upserts.keys.sorted() == ["uid-a"])
    }

    @Test("a list's states do not move the watermark, since a list is not in version order: a crash mid-list resumes from before it (or lists again), never from one object's version")
    func listsKeepTheWatermark() throws {
        var ledger = DeliveryLedger(sinkCount: 1)
        // A first list: objects at versions 78, 30, 55, then the list's own version.
        for (hour, (name, rv)) in [("a", "78"), ("b", "30"), ("c", "55")].enumerated() {
            let tokens = Self.run(&ledger, [Self.change(name, rv: rv, type: .synced)])
            _ = Self.acknowledgeAll(&ledger, tokens)
            let saved = Self.save(&ledger, at: .seconds(3600 * (hour + 1)))
            #expect(saved[Self.scope]?.resourceVersion == "", "no watch position yet: a restart lists again")
            #expect(saved[Self.scope]?.upserts.keys.sorted() == ["uid-\(name)"], "the objects are confirmed all the same")
        }
        #expect(ledger.watermark(of: Self.scope) == nil)
        _ = ledger.received(.progress(Self.scope, resourceVersion: "100"), at: .zero)
        #expect(ledger.watermark(of: Self.scope) == "100")
        // Watching from 100; then a 410 and a relist: its states keep the watermark at the last watch event.
        _ = Self.acknowledgeAll(&ledger, Self.run(&ledger, [Self.change("a", rv: "120")]))
        #expect(ledger.watermark(of: Self.scope) == "120")
        _ = Self.acknowledgeAll(&ledger, Self.run(&ledger, [Self.change("b", rv: "90", type: .synced)]))
        #expect(ledger.watermark(of: Self.scope) == "120")
        _ = ledger.received(.progress(Self.scope, resourceVersion: "200"), at: .zero)
        #expect(ledger.watermark(of: Self.scope) == "200")
    }

    @Test("a deletion inferred from a tombstone (its CRD went away while kubebridge was down, or a relist found it gone) does not move the watermark: its version is the last one known, maybe an early row's, ahead of the watch")
    func inferredDeletionsKeepTheWatermark() throws {
        var ledger = DeliveryLedger(sinkCount: 1)
        _ = ledger.received(.progress(Self.scope, resourceVersion: "100"), at: .zero)
        guard case .change(var deletion) = Self.change("early", rv: "180", type: .deleted) else { return }
        deletion.finalStateUnknown = true
        _ = Self.acknowledgeAll(&ledger, Self.run(&ledger, [.change(deletion)]))
        #expect(ledger.watermark(of: Self.scope) == "100", "changes between 100 and 180 were never received by this process")
        #expect(Self.save(&ledger)[Self.scope]?.deletions == ["uid-early"], "the deletion is saved all the same")
        _ = Self.acknowledgeAll(&ledger, Self.run(&ledger, [Self.change("watched", rv: "120", type: .deleted)]))
        #expect(ledger.watermark(of: Self.scope) == "120", "a deletion the watch saw moves it")
    }

    @Test("scopes are independent")
    func scopes() throws {
        var ledger = DeliveryLedger(sinkCount: 1)
        let blocked = Self.run(&ledger, [Self.change("a", rv: "1")])
        _ = ledger.received(.progress(Self.other, resourceVersion: "7"), at: .zero)
        #expect(ledger.watermark(of: Self.other) == "7")
        #expect(ledger.watermark(of: Self.scope) == nil)
        _ = Self.acknowledgeAll(&ledger, blocked)
        #expect(ledger.watermark(of: Self.scope) == "1")
    }

    @Test("the saved objects follow the confirmed changes: a busy object is one row, a deletion removes it, the kind is kept")
    func knownObjects() throws {
        var ledger = DeliveryLedger(sinkCount: 1)
        let tokens = Self.run(&ledger, [Self.change("a", rv: "1", type: .added), Self.change("b", rv: "2", type: .added),
                                        Self.change("b", rv: "3"), Self.change("a", rv: "4", type: .deleted)])
        _ = Self.acknowledgeAll(&ledger, tokens)
        let delta = try #require(Self.save(&ledger)[Self.scope])
        #expect(delta.upserts.keys.sorted() == ["uid-b"])
        #expect(delta.upserts["uid-b"]?.resourceVersion == "3")
        #expect(delta.deletions == ["uid-a"])
        #expect(delta.kind == "ConfigMap" && delta.apiVersion == "v1")
        var known = KnownObjects()
        for (uid, entry) in delta.upserts { known.set(uid: uid, entry) }
        #expect(known.entries.keys.sorted() == ["uid-b"])
    }

    @Test("saves go once per interval, or at once when enough changes wait; never two at a time", arguments: [
        // (changes confirmed, seconds since the last save, saves early at) → a save now
        (1, 0.5, 100, false), (1, 1.0, 100, true), (1, 2.0, 100, true), (99, 0.1, 100, false), (100, 0.1, 100, true),
    ])
    func saveSchedule(changes: Int, seconds: Double, saveEarlyAt: Int, expected: Bool) throws {
        var ledger = DeliveryLedger(sinkCount: 1, saveInterval: .seconds(1), saveEarlyAt: saveEarlyAt)
        _ = ledger.received(.progress(Self.scope, resourceVersion: "1"), at: .zero)
        #expect(Self.save(&ledger, at: .seconds(10)).count == 1, "the first save goes at the first tick")
        let names = (0..<changes).map { "o\($0)" }
        let tokens = Self.run(&ledger, names.enumerated().map { Self.change($0.element, rv: "\($0.offset + 2)") })
        let early = Self.acknowledgeAll(&ledger, tokens)
        let ticked = ledger.tick(at: .seconds(10) + .seconds(seconds))
        let saved = (early + ticked).filter { if case .save = $0 { true } else { false } }
        #expect(saved.count == (expected ? 1 : 0))
        #expect(ledger.isSaving == expected)
        if expected {
            _ = ledger.received(.progress(Self.scope, resourceVersion: "99999"), at: .zero)
            #expect(ledger.tick(at: .seconds(100)).isEmpty, "one save at a time")
        }
    }

    @Test("a failed save goes back under what came meanwhile: the newer watermark and objects win, nothing is lost")
    func failedSaveMergedBack() throws {
        var ledger = DeliveryLedger(sinkCount: 1)
        _ = Self.acknowledgeAll(&ledger, Self.run(&ledger, [Self.change("a", rv: "1", type: .added), Self.change("b", rv: "2", type: .added)]))
        let first = ledger.tick(at: .seconds(5))
        guard case .save(let deltas) = try #require(first.first) else { Issue.record("no save: \(first)"); return }
        #expect(deltas.first?.upserts.count == 2)
        _ = Self.acknowledgeAll(&ledger, Self.run(&ledger, [Self.change("b", rv: "3", type: .deleted), Self.change("c", rv: "4", type: .added)]))
        ledger.saveFailed()
        #expect(!ledger.isSaving)
        let retried = try #require(Self.save(&ledger)[Self.scope])
        #expect(retried.resourceVersion == "4")
        #expect(retried.upserts.keys.sorted() == ["uid-a", "uid-c"])
        #expect(retried.deletions == ["uid-b"])
    }

    @Test("a new object's row is written before any sink may see it; rows gather while a write is in flight, and a failed write is tried again with what came meanwhile")
    func earlyRows() throws {
        var ledger = DeliveryLedger(sinkCount: 1)
        let first = ledger.received(Self.change("a", rv: "1", type: .added, unrecorded: true), at: .zero)
        #expect(first.recording == 1)
        #expect(first.actions == [.record([UnrecordedObject(Self.changeValue("a", rv: "1"))])])
        let known = ledger.received(Self.change("k", rv: "2"), at: .zero)
        #expect(known.recording == 0 && known.actions.isEmpty, "an object with a row needs none")
        let second = ledger.received(Self.change("b", rv: "3", type: .added, unrecorded: true), at: .zero)
        let third = ledger.received(Self.change("c", rv: "4", type: .added, unrecorded: true), at: .zero)
        #expect(second.actions.isEmpty && third.actions.isEmpty, "one write in flight")
        #expect(ledger.durableRecording == 0)
        #expect(ledger.recorded() == [.release(throughRecording: 1), .record([UnrecordedObject(Self.changeValue("b", rv: "3")), UnrecordedObject(Self.changeValue("c", rv: "4"))])])
        ledger.recordFailed()
        let fourth = ledger.received(Self.change("d", rv: "5", type: .added, unrecorded: true), at: .zero)
        #expect(fourth.actions.isEmpty, "waiting to try again")
        let again = ledger.retryRecording()
        #expect(again == [.record(["b", "c", "d"].enumerated().map { UnrecordedObject(Self.changeValue($0.element, rv: "\($0.offset + 3)")) })])
        #expect(ledger.recorded() == [.release(throughRecording: 4)])
        #expect(ledger.durableRecording == 4)
    }

    static func changeValue(_ name: String, rv: String) -> Change {
        guard case .change(let change) = change(name, rv: rv, type: .added, unrecorded: true) else { fatalError() }
        return change
    }

    @Test("the checkpoint's age counts from the arrival of the newest change or progress a save covered")
    func coveredUntil() throws {
        var ledger = DeliveryLedger(sinkCount: 1)
        let token = try #require(ledger.received(Self.change("a", rv: "1"), at: .seconds(3)).token)
        _ = ledger.received(.progress(Self.other, resourceVersion: "9"), at: .seconds(4))
        _ = ledger.acknowledged(token, sink: 0)
        _ = Self.save(&ledger, at: .seconds(10))
        #expect(ledger.savedCoveredUntil == [Self.scope: .seconds(3), Self.other: .seconds(4)])
    }

    @Test("the state last sent of an object: the ledger's until a save holds it, the store's after; a newer one received meanwhile stays; a deletion has none")
    func sentStates() throws {
        var ledger = DeliveryLedger(sinkCount: 1)
        let v1 = ByteBuffer(string: #"{"v":1}"#), v2 = ByteBuffer(string: #"{"v":2}"#)
        #expect(ledger.sentState(of: "uid-a", in: Self.scope) == .saved, "nothing known: ask the store")
        let first = try #require(ledger.received(Self.change("a", rv: "1"), at: .zero, state: v1).token)
        #expect(ledger.sentState(of: "uid-a", in: Self.scope) == .unsaved(v1))
        _ = ledger.acknowledged(first, sink: 0)
        var save = try #require(ledger.tick(at: .seconds(10)).first)
        guard case .save(let deltas) = save else { Issue.record("\(save)"); return }
        #expect(deltas.first?.states == ["uid-a": v1], "the state goes with the object's row")
        let second = try #require(ledger.received(Self.change("a", rv: "2"), at: .seconds(10), state: v2).token)
        _ = ledger.saveSucceeded()
        #expect(ledger.sentState(of: "uid-a", in: Self.scope) == .unsaved(v2), "received while v1 was being saved: v2 stays")
        _ = ledger.acknowledged(second, sink: 0)
        save = try #require(ledger.tick(at: .seconds(20)).first)
        ledger.saveFailed()
        #expect(ledger.sentState(of: "uid-a", in: Self.scope) == .unsaved(v2))
        save = try #require(ledger.tick(at: .seconds(30)).first)
        guard case .save(let retried) = save else { Issue.record("\(save)"); return }
        #expect(retried.first?.states == ["uid-a": v2], "a failed save's states are saved with the next")
        _ = ledger.saveSucceeded()
        #expect(ledger.sentState(of: "uid-a", in: Self.scope) == .saved)
        let gone = try #require(ledger.received(Self.change("a", rv: "3", type: .deleted), at: .seconds(30), state: nil).token)
        #expect(ledger.sentState(of: "uid-a", in: Self.scope) == .deleted)
        _ = ledger.acknowledged(gone, sink: 0)
        save = try #require(ledger.tick(at: .seconds(40)).first)
        guard case .save(let deletion) = save else { Issue.record("\(save)"); return }
        #expect(deletion.first?.deletions == ["uid-a"] && deletion.first?.states.isEmpty == true)
        _ = ledger.saveSucceeded()
        #expect(ledger.sentState(of: "uid-a", in: Self.scope) == .saved)
    }

    @Test("without states given, the ledger keeps none")
    func noStates() throws {
        var ledger = DeliveryLedger(sinkCount: 1)
        let token = try #require(ledger.received(Self.change("a", rv: "1"), at: .zero).token)
        _ = ledger.acknowledged(token, sink: 0)
        #expect(ledger.sentState(of: "uid-a", in: Self.scope) == .saved)
        #expect(Self.save(&ledger)[Self.scope]?.states.isEmpty == true)
    }

    @Test("a step the state does not allow stops the process, naming the state", arguments: ["recorded", "recordFailed", "retryRecording", "saveSucceeded", "saveFailed"])
    func illegalSteps(step: String) async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) { [step] in
            var ledger = DeliveryLedger(sinkCount: 1)
            switch step {
            case "recorded": _ = ledger.recorded()
            case "recordFailed": ledger.recordFailed()
            case "retryRecording": _ = ledger.retryRecording()
            case "saveSucceeded": _ = ledger.saveSucceeded()
            default: ledger.saveFailed()
            }
        }
        let message = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(message.contains("\(step)() while"), "\(message)")
    }
}

@Suite("Ledger: the ledger's driver, on a manual clock")
struct LedgerDriverTests {
    /// A store in memory that fails the next calls it is told to.
    final class ScriptedStore: CheckpointStore {
        struct State {
            var recorded: [[UnrecordedObject]] = []
            var saved: [[CheckpointDelta]] = []
            var failRecords = 0
            var failSaves = 0
        }

        let state = Mutex(State())
        struct Refused: Error {}

        func load() async throws -> [WatchScope: Checkpoint] { [:] }
        func close() async throws {}
        func record(_ objects: [UnrecordedObject]) async throws {
            try state.withLock { state in
                if state.failRecords > 0 { state.failRecords -= 1; throw Refused() }
                state.recorded.append(objects)
            }
        }
        func save(_ deltas: [CheckpointDelta]) async throws {
            try state.withLock { state in
                if state.failSaves > 0 { state.failSaves -= 1; throw Refused() }
                state.saved.append(deltas)
            }
        }
    }

    @Test("a failing row write is tried again on the backoff's schedule, and the batch waiting for it goes once it is written")
    func recordRetried() async throws {
        let store = ScriptedStore()
        store.state.withLock { $0.failRecords = 3 }
        let clock = ManualClock()
        let ledger = Ledger(store: store, sinkCount: 1, clock: clock, logger: CapturedLogs().logger,
                            retry: Backoff(initial: .seconds(1), maximum: .seconds(4)))
        let receipt = ledger.received(DeliveryLedgerTests.change("a", rv: "1", type: .added, unrecorded: true))
        let released = Task { await ledger.waitUntilRecorded(through: receipt.recording) }
        for _ in 0..<3 {
            try await clock.waitForSleepers()
            clock.advance(by: .seconds(4))
        }
        await released.value
        #expect(store.state.withLock { $0.recorded.map { $0.map(\.uid) } } == [["uid-a"]])
        let slept = clock.requestedSleeps
        #expect(slept.count == 3)
        for (duration, base) in zip(slept, [1.0, 2.0, 4.0]) { #expect(duration >= .seconds(base / 2) && duration <= .seconds(base), "\(slept)") }
    }

    @Test("saves on the interval of its clock, tries a failed save again at the next, and saves what is left when it stops")
    func savesOnItsClock() async throws {
        let store = ScriptedStore()
        let clock = ManualClock()
        let ledger = Ledger(store: store, sinkCount: 1, saveInterval: .seconds(1), clock: clock, logger: CapturedLogs().logger)
        let running = Task { await ledger.run() }
        func confirm(_ name: String, _ rv: String) throws {
            let token = try #require(ledger.received(DeliveryLedgerTests.change(name, rv: rv)).token)
            ledger.acknowledged([token], sink: 0)
        }
        try confirm("a", "1")
        try await clock.waitForSleepers()
        #expect(store.state.withLock { $0.saved.isEmpty }, "nothing before the interval")
        clock.advance(by: .seconds(1))
        try await waitUntil { store.state.withLock { $0.saved.count } == 1 }
        #expect(ledger.saves == 1)

        store.state.withLock { $0.failSaves = 1 }
        try confirm("b", "2")
        try await clock.waitForSleepers()
        clock.advance(by: .seconds(1))
        try await clock.waitForSleepers()
        try await waitUntil { !ledger.isSaving }
        #expect(store.state.withLock { $0.saved.count } == 1, "the save failed")
        try confirm("c", "3")
        clock.advance(by: .seconds(1))
        try await waitUntil { store.state.withLock { $0.saved.count } == 2 }
        let second = store.state.withLock { $0.saved[1] }
        #expect(second.first?.upserts.keys.sorted() == ["uid-b", "uid-c"], "the failed save's objects went with the next")
        #expect(second.first?.resourceVersion == "3")

        try confirm("d", "4")
        running.cancel()
        await running.value
        #expect(store.state.withLock { $0.saved.count } == 3, "the last save at the end")
        #expect(store.state.withLock { $0.saved.last?.first?.resourceVersion } == "4")
    }

    @Test("a task waiting for the ledger to hold no unsaved state goes on after the save that makes it so, or when cancelled")
    func waitAfterSaves() async throws {
        let store = ScriptedStore()
        let clock = ManualClock()
        let ledger = Ledger(store: store, sinkCount: 1, saveInterval: .seconds(1), clock: clock, logger: CapturedLogs().logger)
        let running = Task { await ledger.run() }
        await ledger.waitAfterSaves { !$0.holdsUnsavedStates }
        let token = try #require(ledger.received(DeliveryLedgerTests.change("a", rv: "1"), sentState: ByteBuffer(string: "{}")).token)
        let done = Mutex(false)
        let waiting = Task {
            await ledger.waitAfterSaves { !$0.holdsUnsavedStates }
            done.withLock { $0 = true }
        }
        ledger.acknowledged([token], sink: 0)
        try await clock.waitForSleepers()
        #expect(!done.withLock { $0 }, "the state waits for its save")
        clock.advance(by: .seconds(1))
        await waiting.value
        #expect(ledger.saves == 1 && !ledger.holdsUnsavedStates)

        _ = ledger.received(DeliveryLedgerTests.change("b", rv: "2"), sentState: ByteBuffer(string: "{}"))
        let cancelled = Task { await ledger.waitAfterSaves { !$0.holdsUnsavedStates } }
        cancelled.cancel()
        await cancelled.value
        running.cancel()
        await running.value
    }
}
