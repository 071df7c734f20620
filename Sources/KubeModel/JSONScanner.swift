/// Why bytes from the server are not the JSON they should be.
public struct JSONScanError: Error, Sendable, CustomStringConvertible {
    public var offset: Int
    public var reason: String
    public var description: String { "\(reason) at byte \(offset)" }
}

/// A key of a JSON object, as a span of the scanned bytes.
package struct JSONKey {
    let base: UnsafeRawBufferPointer
    let range: Range<Int>
    let hasEscapes: Bool

    package static func == (key: JSONKey, literal: StaticString) -> Bool {
        guard !key.hasEscapes else { return key.decoded == literal.description }
        guard key.range.count == literal.utf8CodeUnitCount else { return false }
        let bytes = literal.utf8Start
        var i = 0
        for offset in key.range {
            if key.base[offset] != bytes[i] { return false }
            i += 1
        }
        return true
    }

    package var decoded: String {
        var scanner = JSONScanner(base, index: range.lowerBound - 1)
        return (try? scanner.readString()) ?? ""
    }
}

/// A validating JSON scanner that finds spans without building values: the bridge reads the few
/// fields it needs (type, metadata) and keeps every object's bytes as they arrived.
package struct JSONScanner {
    package let base: UnsafeRawBufferPointer
    package var index: Int

    static let maximumDepth = 512

    package init(_ base: UnsafeRawBufferPointer, index: Int = 0) {
        self.base = base
        self.index = index
    }

    package var isAtEnd: Bool { index >= base.count }

    package func error(_ reason: String) -> JSONScanError { JSONScanError(offset: index, reason: reason) }

    @inline(__always)
    package mutating func skipWhitespace() {
        while index < base.count {
            switch base[index] {
            case 0x20, 0x0A, 0x0D, 0x09: index += 1
            default: return
            }
        }
    }

    @inline(__always)
    package func peek() throws -> UInt8 {
        guard index < base.count else { throw error("unexpected end of JSON") }
        return base[index]
    }

    package mutating func expect(_ byte: UInt8) throws {
        skipWhitespace()
        guard try peek() == byte else { throw error("expected '\(Character(Unicode.Scalar(byte)))'") }
        index += 1
    }

    /// Skips one value of any kind, checking its syntax.
    package mutating func skipValue(depth: Int = 0) throws {
        skipWhitespace()
        switch try peek() {
        case UInt8(ascii: "{"):
            try forEachMember(depth: depth) { _, scanner in
                try scanner.skipValue(depth: depth + 1)
                return true
            }
        case UInt8(ascii: "["):
            try forEachElement(depth: depth) { scanner in try scanner.skipValue(depth: depth + 1) }
        case UInt8(ascii: "\""):
            _ = try skipString()
        case UInt8(ascii: "t"): try skipLiteral("true")
        case UInt8(ascii: "f"): try skipLiteral("false")
        case UInt8(ascii: "n"): try skipLiteral("null")
        default: try skipNumber()
        }
    }

    package mutating func skipLiteral(_ literal: StaticString) throws {
        let bytes = literal.utf8Start
        for i in 0..<literal.utf8CodeUnitCount {
            guard index < base.count, base[index] == bytes[i] else { throw error("invalid literal") }
            index += 1
        }
    }

    package mutating func skipNumber() throws {
        let start = index
        if index < base.count, base[index] == UInt8(ascii: "-") { index += 1 }
        func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }
        guard index < base.count, isDigit(base[index]) else { throw JSONScanError(offset: start, reason: "invalid value") }
        if base[index] == 0x30 {
            index += 1
        } else {
            while index < base.count, isDigit(base[index]) { index += 1 }
        }
        if index < base.count, base[index] == UInt8(ascii: ".") {
            index += 1
            guard index < base.count, isDigit(base[index]) else { throw error("invalid number") }
            while index < base.count, isDigit(base[index]) { index += 1 }
        }
        if index < base.count, base[index] == UInt8(ascii: "e") || base[index] == UInt8(ascii: "E") {
            index += 1
            if index < base.count, base[index] == UInt8(ascii: "+") || base[index] == UInt8(ascii: "-") { index += 1 }
            guard index < base.count, isDigit(base[index]) else { throw error("invalid number") }
            while index < base.count, isDigit(base[index]) { index += 1 }
        }
    }

    /// Skips a string at the current position; returns the span of its contents.
    @discardableResult
    package mutating func skipString() throws -> (range: Range<Int>, hasEscapes: Bool) {
        skipWhitespace()
        guard try peek() == UInt8(ascii: "\"") else { throw error("expected a string") }
        index += 1
        let start = index
        var hasEscapes = false
        while true {
            while index + 8 <= base.count, !Self.mayEndString(base.loadUnaligned(fromByteOffset: index, as: UInt64.self)) { index += 8 }
            guard index < base.count else { throw error("unterminated string") }
            let byte = base[index]
            if byte == UInt8(ascii: "\"") { break }
            if byte < 0x20 { throw error("control character in string") }
            if byte == UInt8(ascii: "\\") {
                hasEscapes = true
                index += 1
                guard index < base.count else { throw error("unterminated string") }
                switch base[index] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                    UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    index += 1
                case UInt8(ascii: "u"):
                    index += 1
                    for _ in 0..<4 {
                        guard index < base.count, Self.hexValue(base[index]) != nil else { throw error("invalid \\u escape") }
                        index += 1
                    }
                default:
                    throw error("invalid escape")
                }
                continue
            }
            index += 1
        }
        let range = start..<index
        index += 1
        return (range, hasEscapes)
    }

    /// Whether any of eight bytes is a quote, a backslash or a control character (bit tricks
    /// for "has a zero byte" and "has a byte below 0x20"), so that the bytes of a long string
    /// are checked a word at a time. The bytes before such a byte are then taken one by one.
    @inline(__always)
    static func mayEndString(_ word: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highBits: UInt64 = 0x8080_8080_8080_8080
        let quotes = word ^ (ones &* 0x22)
        let backslashes = word ^ (ones &* 0x5C)
        let hasQuote = (quotes &- ones) & ~quotes
        let hasBackslash = (backslashes &- ones) & ~backslashes
        let hasControl = (word &- ones &* 0x20) & ~word
        return (hasQuote | hasBackslash | hasControl) & highBits != 0
    }

    static func hexValue(_ b: UInt8) -> UInt32? {
        switch b {
        case 0x30...0x39: return UInt32(b - 0x30)
        case 0x61...0x66: return UInt32(b - 0x61 + 10)
        case 0x41...0x46: return UInt32(b - 0x41 + 10)
        default: return nil
        }
    }

    /// Reads a string and decodes its escapes.
    package mutating func readString() throws -> String {
        let (range, hasEscapes) = try skipString()
        let slice = UnsafeRawBufferPointer(rebasing: base[range])
        guard hasEscapes else { return String(decoding: slice, as: UTF8.self) }
        var out: [UInt8] = []
        out.reserveCapacity(range.count)
        var i = 0
        func hex4(_ at: Int) -> UInt32 {
            var v: UInt32 = 0
            for k in 0..<4 { v = v * 16 + (Self.hexValue(slice[at + k]) ?? 0) }
            return v
        }
        while i < slice.count {
            let b = slice[i]
            guard b == UInt8(ascii: "\\") else {
                out.append(b)
                i += 1
                continue
            }
            let e = slice[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var code = hex4(i)
                i += 4
                if (0xD800..<0xDC00).contains(code), i + 5 < slice.count, slice[i] == UInt8(ascii: "\\"), slice[i + 1] == UInt8(ascii: "u") {
                    let low = hex4(i + 2)
                    if (0xDC00..<0xE000).contains(low) {
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        i += 6
                    }
                }
                let scalar = Unicode.Scalar(code) ?? "\u{FFFD}"
                out.append(contentsOf: String(scalar).utf8)
            default: out.append(e)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Reads an integer, or nil for `null`.
    package mutating func readInt64() throws -> Int64? {
        skipWhitespace()
        if try peek() == UInt8(ascii: "n") {
            try skipLiteral("null")
            return nil
        }
        let start = index
        try skipNumber()
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: base[start..<index]), as: UTF8.self)
        guard let value = Int64(text) else { throw JSONScanError(offset: start, reason: "expected an integer") }
        return value
    }

    /// Reads a string or null.
    package mutating func readOptionalString() throws -> String? {
        skipWhitespace()
        if try peek() == UInt8(ascii: "n") {
            try skipLiteral("null")
            return nil
        }
        return try readString()
    }

    /// Walks the members of an object. `body` either consumes the value and returns true, or
    /// returns false and the value is skipped.
    package mutating func forEachMember(depth: Int = 0, _ body: (JSONKey, inout JSONScanner) throws -> Bool) throws {
        try visitMembers(depth: depth) { key, scanner in try body(key, &scanner) ? .consumed : .skip }
    }

    /// What `visitMembers` does after a member's key.
    package enum MemberVisit {
        /// The body consumed the value.
        case consumed
        /// The value is skipped.
        case skip
        /// The body consumed the value and needs nothing more: the scanner stays after it,
        /// and the rest of the object is not read (nor checked).
        case stop
    }

    /// Walks the members of an object, as `body` says after each key.
    package mutating func visitMembers(depth: Int = 0, _ body: (JSONKey, inout JSONScanner) throws -> MemberVisit) throws {
        guard depth < Self.maximumDepth else { throw error("nesting too deep") }
        try expect(UInt8(ascii: "{"))
        skipWhitespace()
        if try peek() == UInt8(ascii: "}") {
            index += 1
            return
        }
        while true {
            let (range, hasEscapes) = try skipString()
            try expect(UInt8(ascii: ":"))
            skipWhitespace()
            switch try body(JSONKey(base: base, range: range, hasEscapes: hasEscapes), &self) {
            case .consumed: break
            case .skip: try skipValue(depth: depth + 1)
            case .stop: return
            }
            skipWhitespace()
            let next = try peek()
            index += 1
            if next == UInt8(ascii: ",") { continue }
            if next == UInt8(ascii: "}") { return }
            index -= 1
            throw error("expected ',' or '}'")
        }
    }

    /// Walks the elements of an array; `body` must consume each value.
    package mutating func forEachElement(depth: Int = 0, _ body: (inout JSONScanner) throws -> Void) throws {
        guard depth < Self.maximumDepth else { throw error("nesting too deep") }
        try expect(UInt8(ascii: "["))
        skipWhitespace()
        if try peek() == UInt8(ascii: "]") {
            index += 1
            return
        }
        while true {
            skipWhitespace()
            try body(&self)
            skipWhitespace()
            let next = try peek()
            index += 1
            if next == UInt8(ascii: ",") { continue }
            if next == UInt8(ascii: "]") { return }
            index -= 1
            throw error("expected ',' or ']'")
        }
    }
}
