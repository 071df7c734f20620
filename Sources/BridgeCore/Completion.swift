import Synchronization

/// A value that arrives once, from any thread (a C library's callback, say), possibly before
/// anyone waits for it.
public final class Completion<Value: Sendable>: Sendable {
    private let state = Mutex<(value: Value?, continuation: CheckedContinuation<Value, Never>?)>((nil, nil))

    public init() {}

    public func complete(_ value: Value) {
        let continuation = state.withLock { state -> CheckedContinuation<Value, Never>? in
            if let continuation = state.continuation {
                state.continuation = nil
                return continuation
            }
            state.value = value
            return nil
        }
        continuation?.resume(returning: value)
    }

    public func wait() async -> Value {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Value? in
                if let value = state.value { return value }
                state.continuation = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}
