import NIOCore

/// A JSON document as a tree, for comparing two states of an object. Numbers keep the text they
/// were written with (the API server writes each number one way), and objects keep their keys'
/// order, so that a patch built from them reads like the objects.
public indirect enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    /// Parses a whole document.
    public init(parsing bytes: ByteBuffer) throws {
        self = try bytes.withUnsafeReadableBytes { raw in
            var scanner = JSONScanner(raw)
            let value = try JSONValue.scan(&scanner, depth: 0)
            scanner.skipWhitespace()
            guard scanner.isAtEnd else { throw scanner.error("text after the document") }
            return value
        }
    }

    static func scan(_ scanner: inout JSONScanner, depth: Int) throws -> JSONValue {
        guard depth < JSONScanner.maximumDepth else { throw scanner.error("nesting too deep") }
        scanner.skipWhitespace()
        switch try scanner.peek() {
        case UInt8(ascii: "{"):
            var object = JSONObject()
            try scanner.forEachMember(depth: depth) { key, scanner in
                object[key.decoded] = try scan(&scanner, depth: depth + 1)
                return true
            }
            return .object(object)
        case UInt8(ascii: "["):
            var elements: [JSONValue] = []
            try scanner.forEachElement(depth: depth) { scanner in elements.append(try scan(&scanner, depth: depth + 1)) }
            return .array(elements)
        case UInt8(ascii: "\""):
            return .string(try scanner.readString())
        case UInt8(ascii: "t"):
            try scanner.skipLiteral("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try scanner.skipLiteral("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try scanner.skipLiteral("null")
            return .null
        default:
            let start = scanner.index
            try scanner.skipNumber()
            return .number(String(decoding: UnsafeRawBufferPointer(rebasing: scanner.base[start..<scanner.index]), as: UTF8.self))
        }
    }

    /// The value as compact JSON.
    public func write(to out: inout ByteBuffer) {
        switch self {
        case .null: out.writeStaticString("null")
        case .bool(let value): out.writeString(value ? "true" : "false")
        case .number(let text): out.writeString(text)
        case .string(let text): out.writeJSONString(text)
        case .array(let elements):
            out.writeStaticString("[")
            for (index, element) in elements.enumerated() {
                if index > 0 { out.writeStaticString(",") }
                element.write(to: &out)
            }
            out.writeStaticString("]")
        case .object(let object):
            out.writeStaticString("{")
            for (index, key) in object.keys.enumerated() {
                if index > 0 { out.writeStaticString(",") }
                out.writeJSONString(key)
                out.writeStaticString(":")
                object[key]!.write(to: &out)
            }
            out.writeStaticString("}")
        }
    }

    /// The value as compact JSON text.
    public var text: String {
        var out = ByteBuffer()
        write(to: &out)
        return String(buffer: out)
    }
}

/// A JSON object's members: looked up by key, written in the order they came.
public struct JSONObject: Sendable, Equatable {
    public private(set) var keys: [String] = []
    private var values: [String: JSONValue] = [:]

    public init() {}

    public subscript(key: String) -> JSONValue? {
        get { values[key] }
        set {
            if let newValue {
                if values.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if values.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    public var isEmpty: Bool { keys.isEmpty }

    /// Equal members, whatever their order.
    public static func == (lhs: JSONObject, rhs: JSONObject) -> Bool { lhs.values == rhs.values }
}
