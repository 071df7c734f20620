import Synchronization

/// A clock that moves only when a test advances it. Code that sleeps on it is suspended until
/// `advance` passes its deadline, so a test can drive backoffs, periods and deadlines through any
/// number of rounds without waiting, and ask what a sleeper asked for.
public final class ManualClock: Clock, Sendable {
    public struct Instant: InstantProtocol, CustomStringConvertible {
        /// Since the clock was made.
        public var offset: Duration

        public func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        public func duration(to other: Instant) -> Duration { other.offset - offset }
        public static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
        public var description: String { "\(offset)" }
    }

    private struct Sleeper {
        let id: Int
        let deadline: Instant
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var now = Instant(offset: .zero)
        var sleepers: [Sleeper] = []
        var nextID = 0
        /// Every sleep asked for, as a duration from the time it was asked.
        var requested: [Duration] = []
    }

    private let state = Mutex(State())

    public init() {}

    public var now: Instant { state.withLock { $0.now } }
    public var minimumResolution: Duration { .zero }

    /// How many tasks sleep on this clock now.
    public var sleeping: Int { state.withLock { $0.sleepers.count } }

    /// The duration of every sleep asked for so far, in order.
    public var requestedSleeps: [Duration] { state.withLock { $0.requested } }

    public func sleep(until deadline: Instant, tolerance: Duration? = nil) async throws {
        let id = state.withLock { state in
            state.nextID += 1
            state.requested.append(state.now.duration(to: deadline))
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                // Cancelled before it was listed: the cancellation handler found nothing to end.
                let outcome = state.withLock { state -> Result<Bool, CancellationError> in
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if deadline <= state.now { return .success(true) }
                    state.sleepers.append(Sleeper(id: id, deadline: deadline, continuation: continuation))
                    return .success(false)
                }
                switch outcome {
                case .failure(let error): continuation.resume(throwing: error)
                case .success(true): continuation.resume()
                case .success(false): break
                }
            }
        } onCancel: {
            let cancelled = state.withLock { state -> Sleeper? in
                guard let index = state.sleepers.firstIndex(where: { $0.id == id }) else { return nil }
                return state.sleepers.remove(at: index)
            }
            cancelled?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves the clock on and wakes every sleeper whose deadline it reached.
    public func advance(by duration: Duration) {
        let woken = state.withLock { state -> [Sleeper] in
            state.now = state.now.advanced(by: duration)
            let now = state.now
            let due = state.sleepers.filter { $0.deadline <= now }
            state.sleepers.removeAll { $0.deadline <= now }
            return due
        }
        for sleeper in woken { sleeper.continuation.resume() }
    }

    /// Waits (on real time, with `waitUntil`'s generous limit) until `count` tasks sleep on this
    /// clock: the code under test has done all it does before its next pause.
    public func waitForSleepers(_ count: Int = 1) async throws {
        try await waitUntil(interval: .milliseconds(1)) { self.sleeping >= count }
    }
}

/// What a task ended with, readable while it runs.
public final class Ending: Sendable {
    private let state = Mutex<(finished: Bool, error: (any Error)?, at: Duration?)>((false, nil, nil))

    public init() {}

    public func finish(_ error: (any Error)?, at: Duration? = nil) { state.withLock { $0 = (true, error, at) } }
    public var finished: Bool { state.withLock { $0.finished } }
    public var error: (any Error)? { state.withLock { $0.error } }
    public var at: Duration? { state.withLock { $0.at } }
}

extension ManualClock {
    /// Runs `body` in a task and moves the clock on by `step` whenever something sleeps on it,
    /// until `body` returns; rethrows what it threw. For code with one sleeper at a time.
    public func drive<T: Sendable>(step: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let ending = Ending()
        let task = Task {
            do {
                let value = try await body()
                ending.finish(nil)
                return value
            } catch {
                ending.finish(error)
                throw error
            }
        }
        while true {
            try await waitUntil(interval: .milliseconds(1)) { ending.finished || self.sleeping > 0 }
            if ending.finished { break }
            advance(by: step)
        }
        return try await task.value
    }
}
