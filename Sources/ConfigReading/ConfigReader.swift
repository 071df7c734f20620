import Foundation
import Yams

/// Walks a YAML configuration, collecting problems rather than stopping at the first: each with
/// its file, line and key. kubebridge's configuration is read with it, and each sink reads its own
/// section with it (beside that sink), so that a new sink brings its keys with it.
public struct ConfigReader {
    public let file: String
    /// Where `${NAME}` and the `...Env` keys are looked up.
    public let environment: [String: String]
    public var problems: [String] = []

    public init(file: String, environment: [String: String]) {
        self.file = file
        self.environment = environment
    }

    public func location(_ node: Node) -> String {
        "\(file):\(node.mark.map { "\($0.line)" } ?? "?")"
    }

    public mutating func problem(_ node: Node, _ key: String, _ message: String) {
        problems.append("\(location(node)): \(key): \(message)")
    }

    /// The members of a mapping, reporting keys not `allowed` (typos are the usual mistake).
    public mutating func mapping(_ node: Node, _ key: String, allowed: [String]?) -> [String: Node] {
        guard case .mapping(let mapping) = node else {
            problem(node, key, "expected a mapping")
            return [:]
        }
        var result: [String: Node] = [:]
        for (keyNode, value) in mapping {
            let name = keyNode.string ?? ""
            if let allowed, !allowed.contains(name) {
                problem(keyNode, key.isEmpty ? name : "\(key).\(name)",
                        "unknown key; expected one of \(allowed.joined(separator: ", "))")
                continue
            }
            result[name] = value
        }
        return result
    }

    public mutating func string(_ node: Node?, _ key: String) -> String? {
        guard let node else { return nil }
        guard case .scalar(let scalar) = node else {
            problem(node, key, "expected a string")
            return nil
        }
        return scalar.string
    }

    public mutating func int(_ node: Node?, _ key: String, minimum: Int = 0) -> Int? {
        guard let text = string(node, key), let node else { return nil }
        guard let value = Int(text.replacingOccurrences(of: "_", with: "")), value >= minimum else {
            problem(node, key, "expected a whole number of at least \(minimum), got \"\(text)\"")
            return nil
        }
        return value
    }

    public mutating func bool(_ node: Node?, _ key: String) -> Bool? {
        guard let text = string(node, key), let node else { return nil }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            problem(node, key, "expected true or false, got \"\(text)\"")
            return nil
        }
    }

    /// `500ms`, `5s`, `2m`, `1h`.
    public mutating func duration(_ node: Node?, _ key: String) -> Duration? {
        guard let text = string(node, key), let node else { return nil }
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        for (unit, scale) in units where text.hasSuffix(unit) {
            // At most a year: "1e999s" is a number, but no duration.
            if let value = Double(text.dropLast(unit.count)), value >= 0, value * scale <= 365 * 86400 {
                return .milliseconds(Int64(value * scale * 1000))
            }
        }
        problem(node, key, "expected a duration such as 500ms, 5s or 2m (at most a year), got \"\(text)\"")
        return nil
    }

    public mutating func strings(_ node: Node?, _ key: String) -> [String]? {
        guard let node else { return nil }
        guard case .sequence(let sequence) = node else {
            problem(node, key, "expected a list")
            return nil
        }
        return sequence.enumerated().compactMap { string($0.element, "\(key)[\($0.offset)]") }
    }

    /// One of an enumeration's values (of those `allowed`), by its raw value.
    public mutating func choice<Value: RawRepresentable & CaseIterable>(_ node: Node?, _ key: String, of type: Value.Type,
                                                                        among allowed: [Value] = Array(Value.allCases)) -> Value? where Value.RawValue == String {
        guard let node, let text = string(node, key) else { return nil }
        guard let value = allowed.first(where: { $0.rawValue == text }) else {
            let names = allowed.map(\.rawValue)
            problem(node, key, "expected \(names.dropLast().joined(separator: ", ")) or \(names.last ?? ""), got \"\(text)\"")
            return nil
        }
        return value
    }

    /// A list, or one comma-separated string.
    public mutating func addresses(_ node: Node?, _ key: String) -> [String] {
        if let node, case .scalar = node {
            return (string(node, key) ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        }
        return strings(node, key) ?? []
    }

    /// The options when `validate` accepts them; otherwise nil, and the problem is reported at `node`.
    public mutating func validated<Options>(_ options: Options, node: Node, key: String, _ validate: (Options) throws -> Void) -> Options? {
        do {
            try validate(options)
        } catch {
            problem(node, key, "\(error)")
            return nil
        }
        return options
    }

    /// `${NAME}` in a value is replaced by the environment variable, so that credentials can come
    /// from a Secret rather than the file.
    public mutating func environmentExpanded(_ text: String, node: Node, key: String) -> String {
        var result = ""
        var rest = Substring(text)
        while let start = rest.range(of: "${") {
            result += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                problem(node, key, "\"${\" without a closing \"}\"")
                return text
            }
            let name = String(rest[start.upperBound..<end])
            if let value = environment[name] {
                result += value
            } else {
                problem(node, key, "the environment variable \(name) is not set")
            }
            rest = rest[rest.index(after: end)...]
        }
        return result + rest
    }
}
