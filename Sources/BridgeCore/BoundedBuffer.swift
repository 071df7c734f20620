import DequeModule
import Synchronization

/// A queue between producers and one consumer, bounded in count and in bytes. A producer that
/// finds it full waits until the consumer makes room: that wait is how a slow sink slows the
/// watchers, and through them the API server, instead of growing memory.
public final class BoundedBuffer<Element: Sendable>: Sendable {
    struct State {
        var items: Deque<(element: Element, bytes: Int)> = []
        var bytes = 0
        var closed = false
        var waitingProducers: Deque<(id: UInt64, continuation: CheckedContinuation<Void, Error>)> = []
        var waitingConsumer: CheckedContinuation<Void, Never>?
        var nextID: UInt64 = 0
    }

    public let maxCount: Int
    public let maxBytes: Int
    private let state = Mutex(State())
    /// Called when an element arrives in an empty buffer, for a consumer that waits for something
    /// else besides (`take` has its own wait).
    private let becameNonEmpty: (@Sendable () -> Void)?

    public struct Closed: Error {}

    public init(maxCount: Int, maxBytes: Int, becameNonEmpty: (@Sendable () -> Void)? = nil) {
        precondition(maxCount > 0 && maxBytes > 0)
        self.maxCount = maxCount
        self.maxBytes = maxBytes
        self.becameNonEmpty = becameNonEmpty
    }

    public var count: Int { state.withLock { $0.items.count } }
    public var byteCount: Int { state.withLock { $0.bytes } }

    /// Adds an element, waiting while the buffer is full. An element larger than `maxBytes` is
    /// let in when the buffer is empty, so that it cannot block forever.
    public func push(_ element: Element, bytes: Int) async throws {
        while true {
            let admitted: (done: Bool, first: Bool) = try state.withLock { state in
                if state.closed { throw Closed() }
                let fits = state.items.count < maxCount && (state.bytes + bytes <= maxBytes || state.items.isEmpty)
                guard fits else { return (false, false) }
                state.items.append((element, bytes))
                state.bytes += bytes
                let consumer = state.waitingConsumer
                state.waitingConsumer = nil
                consumer?.resume()
                return (true, state.items.count == 1)
            }
            if admitted.done {
                if admitted.first { becameNonEmpty?() }
                return
            }
            let id = state.withLock { state -> UInt64 in
                state.nextID += 1
                return state.nextID
            }
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
                    let resumeNow: Error?? = state.withLock { state in
                        if state.closed { return .some(Closed()) }
                        if Task.isCancelled { return .some(CancellationError()) }
                        // Room appeared between the check and now.
                        if state.items.count < maxCount && (state.bytes + bytes <= maxBytes || state.items.isEmpty) { return .some(nil) }
                        state.waitingProducers.append((id, continuation))
                        return nil
                    }
                    if let resumeNow {
                        if let error = resumeNow { continuation.resume(throwing: error) } else { continuation.resume() }
                    }
                }
            } onCancel: {
                let waiter = state.withLock { state -> CheckedContinuation<Void, Error>? in
                    guard let index = state.waitingProducers.firstIndex(where: { $0.id == id }) else { return nil }
                    return state.waitingProducers.remove(at: index).continuation
                }
                waiter?.resume(throwing: CancellationError())
            }
        }
    }

    /// Takes up to `maxCount` elements and `maxBytes` bytes (at least one element), waiting while
    /// the buffer is empty; nil once it is closed and drained.
    public func take(maxCount: Int, maxBytes: Int) async -> [Element]? {
        while true {
            let taken: [Element]?? = state.withLock { state in
                if state.items.isEmpty {
                    return state.closed ? .some(nil) : nil
                }
                var batch: [Element] = []
                var size = 0
                while let first = state.items.first, batch.count < maxCount, batch.isEmpty || size + first.bytes <= maxBytes {
                    state.items.removeFirst()
                    batch.append(first.element)
                    size += first.bytes
                }
                state.bytes -= size
                let producers = state.waitingProducers
                state.waitingProducers = []
                for producer in producers { producer.continuation.resume() }
                return .some(batch)
            }
            if let taken { return taken }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let resumeNow = state.withLock { state -> Bool in
                        if !state.items.isEmpty || state.closed || Task.isCancelled { return true }
                        state.waitingConsumer = continuation
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            } onCancel: {
                let consumer = state.withLock { state -> CheckedContinuation<Void, Never>? in
                    defer { state.waitingConsumer = nil }
                    return state.waitingConsumer
                }
                consumer?.resume()
            }
            if Task.isCancelled { return nil }
        }
    }

    /// Takes what is there now, without waiting (possibly nothing).
    public func takeAvailable(maxCount: Int, maxBytes: Int) -> [Element] {
        guard maxCount > 0, maxBytes > 0 else { return [] }
        return state.withLock { state in
            var batch: [Element] = []
            var size = 0
            while let first = state.items.first, batch.count < maxCount, size + first.bytes <= maxBytes {
                state.items.removeFirst()
                batch.append(first.element)
                size += first.bytes
            }
            state.bytes -= size
            if !batch.isEmpty {
                let producers = state.waitingProducers
                state.waitingProducers = []
                for producer in producers { producer.continuation.resume() }
            }
            return batch
        }
    }

    /// No more pushes; the consumer takes what is left, then gets nil.
    public func close() {
        let (producers, consumer) = state.withLock { state in
            state.closed = true
            defer {
                state.waitingProducers = []
                state.waitingConsumer = nil
            }
            return (state.waitingProducers, state.waitingConsumer)
        }
        for producer in producers { producer.continuation.resume(throwing: Closed()) }
        consumer?.resume()
    }
}
