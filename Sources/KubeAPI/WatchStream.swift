import AsyncHTTPClient
import KubeModel
import NIOCore

/// The frames of one watch, read from the response body as it arrives. The stream ends when the
/// server ends the watch (its timeout, or a CRD going away); a broken stream throws a `KubeAPIError`.
public struct WatchStream: AsyncSequence, Sendable {
    public typealias Element = WatchFrame

    let body: HTTPClientResponse.Body
    public let resource: GroupVersionResource
    let maxLineBytes: Int
    let client: KubeClient

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(lines: body.decode(using: WatchLineDecoder(maxLineBytes: maxLineBytes), maximumBufferSize: maxLineBytes + 1).makeAsyncIterator(),
                      resource: resource, maxLineBytes: maxLineBytes, client: client)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var lines: NIODecodedAsyncSequence<HTTPClientResponse.Body, WatchLineDecoder>.AsyncIterator
        let resource: GroupVersionResource
        let maxLineBytes: Int
        let client: KubeClient

        public mutating func next() async throws -> WatchFrame? {
            while true {
                let line: ByteBuffer?
                do {
                    line = try await lines.next()
                } catch is ByteToMessageDecoderError.PayloadTooLargeError, is WatchLineTooLong {
                    throw KubeAPIError(code: .lineTooLong, message: "a watch event of \(resource) is longer than \(maxLineBytes) bytes (maxWatchLineBytes); raise the limit if objects this large are expected",
                                       request: "watch \(resource)")
                } catch is TruncatedWatchLine {
                    throw KubeAPIError(code: .truncatedStream, message: "the stream ended in the middle of an event", request: "watch \(resource)")
                } catch {
                    throw client.mapTransportError(error, request: "watch \(resource)")
                }
                guard let line else { return nil }
                if line.readableBytesView.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
                do {
                    return try WatchFrame.decode(line: line)
                } catch {
                    let preview = String(buffer: line.getSlice(at: line.readerIndex, length: Swift.min(120, line.readableBytes)) ?? ByteBuffer())
                    throw KubeAPIError(code: .malformedResponse, message: "malformed watch event (\(error)): \(preview)", request: "watch \(resource)")
                }
            }
        }
    }
}

struct TruncatedWatchLine: Error {}
struct WatchLineTooLong: Error {}

/// Splits a watch body at newlines. A stream that ends without its final newline was cut in the
/// middle of an event, which is an error rather than a last line.
struct WatchLineDecoder: NIOSingleStepByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    let maxLineBytes: Int
    /// Bytes already searched for a newline, so a long line is scanned once, not once per chunk.
    private var scanned = 0

    init(maxLineBytes: Int) {
        self.maxLineBytes = maxLineBytes
    }

    mutating func decode(buffer: inout ByteBuffer) throws -> ByteBuffer? {
        let view = buffer.readableBytesView
        let start = view.startIndex + scanned
        guard let newline = view[start...].firstIndex(of: 0x0A) else {
            scanned = view.count
            if scanned > maxLineBytes { throw WatchLineTooLong() }
            return nil
        }
        scanned = 0
        if newline - view.startIndex > maxLineBytes { throw WatchLineTooLong() }
        var line = buffer.readSlice(length: newline - view.startIndex)!
        buffer.moveReaderIndex(forwardBy: 1)
        if line.readableBytesView.last == 0x0D { line.moveWriterIndex(to: line.writerIndex - 1) }
        return line
    }

    /// Lines are slices of the buffer, so reclaiming its read bytes copies the rest into new
    /// storage. NIO's default reclaims once 2 KiB are read: after every line or two, copying
    /// what is left of each chunk dozens of times. Once at least half of the buffer is read, what
    /// is copied is at most what was read since the last time.
    func shouldReclaimBytes(buffer: ByteBuffer) -> Bool {
        buffer.readerIndex >= 2048 && buffer.readerIndex >= buffer.readableBytes
    }

    mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> ByteBuffer? {
        if let line = try decode(buffer: &buffer) { return line }
        if buffer.readableBytesView.contains(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }) {
            throw TruncatedWatchLine()
        }
        buffer.moveReaderIndex(to: buffer.writerIndex)
        return nil
    }
}

extension Duration {
    var timeAmount: TimeAmount {
        let (seconds, attoseconds) = components
        return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
