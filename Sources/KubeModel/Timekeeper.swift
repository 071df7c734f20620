/// A clock as kubebridge's components use it: the time elapsed since it was made, and sleeping.
/// Made from any `Clock` counting in `Duration`, so that tests hand in a manual clock and drive
/// backoffs, intervals and deadlines without waiting. Components that compare times they read
/// must share one timekeeper (times from two are measured from different origins).
public struct Timekeeper: Sendable {
    /// Time since this timekeeper was made.
    public let now: @Sendable () -> Duration
    /// Sleeps on the clock; throws `CancellationError` when the task is cancelled.
    public let sleep: @Sendable (Duration) async throws -> Void

    public init<C: Clock>(_ clock: C) where C.Duration == Duration {
        let origin = clock.now
        now = { origin.duration(to: clock.now) }
        sleep = { try await clock.sleep(for: $0) }
    }

    /// On `ContinuousClock`, from now.
    public static func continuous() -> Timekeeper { Timekeeper(ContinuousClock()) }
}
