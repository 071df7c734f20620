import BridgeCore
import NIOCore

/// Rejected events as JSON lines, each with its sink and reason, durable before `write` returns.
public final class DeadLetterFile: DeadLetters {
    public let path: String
    private let writer: DurableAppender

    public init(path: String) throws {
        self.path = path
        writer = try DurableAppender(path: path)
    }

    public func write(_ event: OutboundEvent, sink: String, reason: String) async throws {
        var line = ByteBuffer()
        line.writeStaticString("{\"sink\":")
        line.writeJSONString(sink)
        line.writeStaticString(",\"reason\":")
        line.writeJSONString(reason)
        line.writeStaticString(",\"event\":")
        var structured = event.envelope.structured()
        line.writeBuffer(&structured)
        line.writeStaticString("}\n")
        try await writer.append([line])
    }

    public func close() async throws {
        try await writer.close()
    }
}
