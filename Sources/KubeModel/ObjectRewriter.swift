import NIOCore

/// Edits of an object's bytes that cut or replace spans instead of decoding and encoding the
/// object again: every change of every object passes through here, and the rest of the bytes stay
/// exactly as the API server sent them.
public enum ObjectRewriter {
    /// What to change.
    public struct Edits: Sendable, Equatable {
        /// Leave out `metadata.managedFields` (large, and of no use downstream).
        public var dropManagedFields: Bool
        /// Replace the values of top-level `data` and `stringData` (a Secret's contents) by this
        /// marker, keeping the keys; nil leaves them.
        public var redactDataWith: String?

        public init(dropManagedFields: Bool = false, redactDataWith: String? = nil) {
            self.dropManagedFields = dropManagedFields
            self.redactDataWith = redactDataWith
        }

        public var isEmpty: Bool { !dropManagedFields && redactDataWith == nil }
    }

    /// The object with the edits applied; the same bytes when there is nothing to change.
    public static func apply(_ edits: Edits, to object: ByteBuffer) throws -> ByteBuffer {
        guard !edits.isEmpty else { return object }
        var cuts: [(range: Range<Int>, replacement: [UInt8])] = []
        try object.withUnsafeReadableBytes { raw in
            var scanner = JSONScanner(raw)
            // Objects arrive checked (`WatchFrame`, `ObjectList`): what follows the last member
            // to change need not be read.
            try scanner.visitMembers { key, scanner in
                if key == "metadata", edits.dropManagedFields {
                    scanner.skipWhitespace()
                    guard try scanner.peek() == UInt8(ascii: "{") else { return .skip }
                    try collectMemberCuts(&scanner, removing: "managedFields", into: &cuts)
                    return edits.redactDataWith == nil ? .stop : .consumed
                }
                if key == "data" || key == "stringData", let marker = edits.redactDataWith {
                    scanner.skipWhitespace()
                    guard try scanner.peek() == UInt8(ascii: "{") else { return .skip }
                    var replacement: [UInt8] = []
                    var literal = ByteBuffer()
                    literal.writeJSONString(marker)
                    replacement = Array(buffer: literal)
                    try scanner.forEachMember(depth: 1) { _, scanner in
                        scanner.skipWhitespace()
                        let start = scanner.index
                        try scanner.skipValue(depth: 2)
                        cuts.append((start..<scanner.index, replacement))
                        return true
                    }
                    return .consumed
                }
                return .skip
            }
        }
        guard !cuts.isEmpty else { return object }
        var out = ByteBuffer()
        out.reserveCapacity(object.readableBytes)
        var position = 0
        let base = object.readerIndex
        for cut in cuts.sorted(by: { $0.range.lowerBound < $1.range.lowerBound }) {
            if cut.range.lowerBound > position {
                var slice = object.getSlice(at: base + position, length: cut.range.lowerBound - position)!
                out.writeBuffer(&slice)
            }
            out.writeBytes(cut.replacement)
            position = cut.range.upperBound
        }
        if object.readableBytes > position {
            var rest = object.getSlice(at: base + position, length: object.readableBytes - position)!
            out.writeBuffer(&rest)
        }
        return out
    }

    /// Finds the member `name` of the object at the scanner and records the cut that removes it
    /// together with one adjacent comma, so the object stays valid JSON.
    private static func collectMemberCuts(_ scanner: inout JSONScanner, removing name: StaticString,
                                          into cuts: inout [(range: Range<Int>, replacement: [UInt8])]) throws {
        scanner.skipWhitespace()
        let open = scanner.index
        var members: [(keyStart: Int, valueEnd: Int, matches: Bool)] = []
        var keyStart = open + 1
        try scanner.forEachMember(depth: 1) { key, scanner in
            try scanner.skipValue(depth: 2)
            members.append((keyStart, scanner.index, key == name))
            // The next key starts after the comma that follows this value.
            var probe = scanner
            probe.skipWhitespace()
            keyStart = probe.index + 1
            return true
        }
        guard let index = members.firstIndex(where: \.matches) else { return }
        let member = members[index]
        // The key's opening quote: skip whitespace before it.
        var start = member.keyStart
        while start < scanner.base.count, scanner.base[start] != UInt8(ascii: "\"") { start += 1 }
        if index + 1 < members.count {
            // Remove "key": value, up to the next key.
            var end = members[index + 1].keyStart
            while end < scanner.base.count, scanner.base[end] != UInt8(ascii: "\"") { end += 1 }
            cuts.append((start..<end, []))
        } else if index > 0 {
            // The last member: remove the comma before it.
            cuts.append((members[index - 1].valueEnd..<member.valueEnd, []))
        } else {
            cuts.append((start..<member.valueEnd, []))
        }
    }
}
