@testable import KubeAPI
import NIOCore
import Testing

@Suite("Watch lines split at newlines, however the body is cut into chunks")
struct WatchLineDecoderTests {
    @Test("lines of 1 byte to 5 KiB (CRLF endings among them), in chunks of 1 to 9,000 bytes, come back whole and in order while earlier lines are still held")
    func chunked() throws {
        var generator = SystemRandomNumberGenerator()
        let lines = (0..<240).map { index -> String in
            let body = String(repeating: Character(UnicodeScalar(UInt8(97 + index % 26))), count: [1, 40, 1200, 5000][index % 4] + index % 7)
            return "{\"n\":\(index),\"v\":\"\(body)\"}"
        }
        let text = lines.enumerated().map { $0.offset % 5 == 0 ? $0.element + "\r\n" : $0.element + "\n" }.joined()
        for maximumChunk in [5, 700, 4096, 9000] {
            let processor = NIOSingleStepByteToMessageProcessor(WatchLineDecoder(maxLineBytes: 8192), maximumBufferSize: 8193)
            var held: [ByteBuffer] = []
            var bytes = ByteBuffer(string: text)
            while bytes.readableBytes > 0 {
                let chunk = bytes.readSlice(length: min(bytes.readableBytes, Int.random(in: 1...maximumChunk, using: &generator)))!
                try processor.process(buffer: chunk) { held.append($0) }
            }
            try processor.finishProcessing(seenEOF: true) { held.append($0) }
            #expect(held.map { String(buffer: $0) } == lines, "chunks of up to \(maximumChunk) bytes")
        }
    }
}
