import BridgeCore
import KubeModel
import Testing

@Suite("PipelineStateMachine: batches out, the per-object order rule, retries")
struct PipelineStateMachineTests {
    /// One row of the settling table: batches sent in order (events named `object/rv`), the
    /// outcome of each event (`ok`, `retry`, `reject`, `fatal`), and what must come of them.
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var batches: [[String]]
        var outcomes: [[String]]
        var confirmed: [String]
        var deadLettered: [String] = []
        /// Sent again after the backoff, in order; nil when nothing failed.
        var resent: [String]?
        var stop: String?
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "everything delivered: every event confirmed, in order, and the next batch may go",
             batches: [["a/1", "b/2"], ["c/3"]], outcomes: [["ok", "ok"], ["ok"]], confirmed: ["a/1", "b/2", "c/3"]),
        Case(name: "a failure holds its object's later changes, in its batch and in later ones, confirmed or not",
             batches: [["a/1", "b/2"], ["a/3", "c/4"], ["d/5", "a/6"]], outcomes: [["retry", "ok"], ["ok", "ok"], ["ok", "ok"]],
             confirmed: ["b/2", "c/4", "d/5"], resent: ["a/1", "a/3", "a/6"]),
        Case(name: "a rejection behind a failure of its object is not dead-lettered but sent again after it",
             batches: [["a/1"], ["a/2", "b/3"]], outcomes: [["retry"], ["reject", "reject"]],
             confirmed: ["b/3"], deadLettered: ["b/3"], resent: ["a/1", "a/2"]),
        Case(name: "a failure holds only its own object",
             batches: [["a/1", "b/2", "a/3"]], outcomes: [["ok", "retry", "ok"]], confirmed: ["a/1", "a/3"], resent: ["b/2"]),
        Case(name: "a fatal outcome stops the sink once the batches out are settled; what they confirmed is acknowledged",
             batches: [["a/1", "b/2"], ["c/3", "b/4"]], outcomes: [["ok", "fatal"], ["ok", "ok"]],
             confirmed: ["a/1", "c/3"], stop: "fatal"),
        Case(name: "a failure in a later batch than the oldest: the oldest's confirmations go first",
             batches: [["a/1"], ["b/2"], ["c/3"]], outcomes: [["ok"], ["retry"], ["ok"]], confirmed: ["a/1", "c/3"], resent: ["b/2"]),
    ]

    static func events(_ names: [String], ledger: inout DeliveryLedger) throws -> [OutboundEvent] {
        try names.map { name in
            let parts = name.split(separator: "/")
            return try DeliveryTests.event(String(parts[0]), rv: String(parts[1]), ledger: &ledger)
        }
    }

    static func outcome(_ code: String) -> DeliveryOutcome {
        switch code {
        case "ok": .delivered
        case "retry": .retriable("away")
        case "reject": .rejected("too large")
        default: .fatal(code)
        }
    }

    /// `object/rv` of an event built by `DeliveryTests.event`, whose ids are `uid-object/rv`.
    static func name(_ event: OutboundEvent) -> String { String(event.envelope.id.dropFirst(4)) }

    @Test("settling batches", arguments: cases)
    func settling(_ row: Case) throws {
        var ledger = DeliveryLedger(sinkCount: 1)
        var machine = PipelineStateMachine(batchesInFlight: row.batches.count, linger: .zero, retry: Backoff(initial: .seconds(1)), seed: 7)
        var names: [DeliveryLedger.Token: String] = [:]
        for batch in row.batches {
            let events = try Self.events(batch, ledger: &ledger)
            for event in events { names[event.token] = Self.name(event) }
            #expect(machine.next(cancelled: false) == (machine.batchesOut == 0 ? .takeBatch(linger: .zero) : .takeAvailable))
            machine.sent(events)
        }
        #expect(machine.next(cancelled: false) == .awaitOutcomes, "the window is full")
        var confirmed: [String] = []
        var deadLettered: [String] = []
        var stops: [String] = []
        var failed = false
        for (index, outcomes) in row.outcomes.enumerated() {
            let settlement = machine.settle(outcomes.map(Self.outcome), at: .seconds(10))
            confirmed += settlement.confirmed.map { names[$0]! }
            deadLettered += settlement.deadLetters.map { Self.name($0.event) }
            #expect(settlement.latencies.count == settlement.confirmed.count)
            if let stop = settlement.stop { stops.append(stop) }
            failed = failed || settlement.again > 0
            if index < row.outcomes.count - 1 {
                #expect(settlement.stop == nil, "the sink stops only once every batch out is settled")
                #expect(machine.next(cancelled: false) == (failed ? .awaitOutcomes : .takeAvailable), "no new batch while failed ones wait")
            }
        }
        #expect(confirmed == row.confirmed)
        #expect(deadLettered == row.deadLettered)
        #expect(stops == (row.stop.map { [$0] } ?? []))
        switch machine.next(cancelled: false) {
        case .waitUntil(let deadline):
            #expect(deadline >= .seconds(10.5) && deadline <= .seconds(11), "the first retry waits half to all of the initial backoff")
            let retry = machine.deadlineReached()
            #expect(retry.attempt == 1)
            #expect(retry.events.map(Self.name) == row.resent)
            #expect(machine.next(cancelled: false) == .awaitOutcomes)
        case .finished:
            #expect(row.stop != nil)
        case let next:
            #expect(row.resent == nil && row.stop == nil, "\(next)")
            #expect(next == .takeBatch(linger: .zero))
        }
    }

    @Test("retries back off exponentially until everything is through, then new batches go again")
    func retrySchedule() throws {
        var ledger = DeliveryLedger(sinkCount: 1)
        var machine = PipelineStateMachine(batchesInFlight: 1, linger: .milliseconds(5), retry: Backoff(initial: .seconds(1), maximum: .seconds(4)), seed: 1)
        machine.sent(try Self.events(["a/1", "b/2"], ledger: &ledger))
        var now = Duration.seconds(100)
        var settlement = machine.settle([.retriable("away"), .delivered], at: now)
        #expect(settlement.failure == "away")
        #expect(settlement.again == 1)
        var waits: [Duration] = []
        for attempt in 1...4 {
            guard case .waitUntil(let deadline) = machine.next(cancelled: false) else { Issue.record("no backoff"); return }
            waits.append(deadline - now)
            now = deadline
            let retry = machine.deadlineReached()
            #expect(retry.attempt == attempt)
            #expect(retry.events.map(Self.name) == ["a/1"])
            settlement = machine.settle([attempt < 4 ? .retriable("away") : .delivered], at: now)
        }
        for (wait, base) in zip(waits, [1.0, 2.0, 4.0, 4.0]) {
            #expect(wait >= .seconds(base / 2) && wait <= .seconds(base), "\(waits)")
        }
        #expect(settlement.confirmed.count == 1)
        #expect(machine.next(cancelled: false) == .takeBatch(linger: .milliseconds(5)))
    }

    @Test("a fatal outcome of a retry stops the sink")
    func fatalRetry() throws {
        var ledger = DeliveryLedger(sinkCount: 1)
        var machine = PipelineStateMachine(batchesInFlight: 1, linger: .zero, retry: Backoff(), seed: 1)
        machine.sent(try Self.events(["a/1"], ledger: &ledger))
        _ = machine.settle([.retriable("away")], at: .zero)
        guard case .waitUntil = machine.next(cancelled: false) else { Issue.record("no backoff"); return }
        _ = machine.deadlineReached()
        let settlement = machine.settle([.fatal("fenced")], at: .seconds(1))
        #expect(settlement.stop == "fenced")
        #expect(settlement.confirmed.isEmpty)
        #expect(machine.next(cancelled: false) == .finished)
    }

    @Test("cancelled: nothing new goes, what is out is settled, then it is done")
    func cancelled() throws {
        var ledger = DeliveryLedger(sinkCount: 1)
        var machine = PipelineStateMachine(batchesInFlight: 4, linger: .zero, retry: Backoff(), seed: 1)
        #expect(machine.next(cancelled: true) == .finished)
        machine.sent(try Self.events(["a/1"], ledger: &ledger))
        #expect(machine.next(cancelled: false) == .takeAvailable)
        #expect(machine.next(cancelled: true) == .awaitOutcomes)
        _ = machine.settle([.delivered], at: .zero)
        #expect(machine.next(cancelled: true) == .finished)
    }

    @Test("a step the state does not allow stops the process, naming the state", arguments: ["sent", "settle", "deadlineReached"])
    func illegalSteps(step: String) async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) { [step] in
            var ledger = DeliveryLedger(sinkCount: 1)
            var machine = PipelineStateMachine(batchesInFlight: 1, linger: .zero, retry: Backoff(), seed: 1)
            switch step {
            case "sent":
                machine.sent(try Self.events(["a/1"], ledger: &ledger))
                machine.sent(try Self.events(["b/2"], ledger: &ledger))
            case "settle": _ = machine.settle([], at: .zero)
            default: _ = machine.deadlineReached()
            }
        }
        let message = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(message.contains("while delivering"), "\(message)")
    }
}
