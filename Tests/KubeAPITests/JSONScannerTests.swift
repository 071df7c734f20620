import KubeModel
import Testing

@Suite("JSON strings are scanned exactly, wherever their special bytes fall")
struct JSONScannerTests {
    /// Scans the string that starts at `json`'s first byte.
    static func scan(_ json: [UInt8]) throws -> (range: Range<Int>, hasEscapes: Bool, end: Int) {
        try json.withUnsafeBytes { raw in
            var scanner = JSONScanner(raw)
            let (range, hasEscapes) = try scanner.skipString()
            return (range, hasEscapes, scanner.index)
        }
    }

    @Test("a quote, an escape, a control character or the end at each offset of strings of up to 40 bytes, with multi-byte UTF-8 around them")
    func everyOffset() throws {
        for length in 0...40 {
            let body = (0..<length).map { UInt8(ascii: "a") + UInt8($0 % 26) }
            let tail = Array(#",  "next"}"#.utf8)
            // Plain: the string ends at the first quote.
            let plain = try Self.scan([0x22] + body + [0x22] + tail)
            #expect(plain.range == 1..<(1 + length) && !plain.hasEscapes && plain.end == length + 2)
            // Unterminated, at every length.
            #expect(throws: JSONScanError.self) { try Self.scan([0x22] + body) }
            for offset in 0..<length {
                var escaped = body
                escaped.replaceSubrange(offset..<offset + 1, with: Array(#"\""#.utf8))
                let withEscape = try Self.scan([0x22] + escaped + [0x22] + tail)
                #expect(withEscape.range == 1..<(1 + length + 1) && withEscape.hasEscapes, "escaped quote at \(offset) of \(length)")
                var control = body
                control[offset] = 0x0A
                #expect(throws: JSONScanError.self, "a raw newline at \(offset) of \(length)") { try Self.scan([0x22] + control + [0x22]) }
                var utf8 = body
                utf8.replaceSubrange(offset..<offset + 1, with: Array("é€".utf8))
                let withUTF8 = try Self.scan([0x22] + utf8 + [0x22] + tail)
                #expect(withUTF8.range == 1..<(1 + length + 4) && !withUTF8.hasEscapes, "UTF-8 at \(offset) of \(length)")
                var early = body
                early[offset] = 0x22
                #expect(try Self.scan([0x22] + early + [0x22]).range == 1..<(1 + offset), "a quote at \(offset) of \(length) ends the string")
            }
        }
    }
}
