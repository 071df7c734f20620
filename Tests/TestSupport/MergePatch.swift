import KubeModel

/// RFC 7386 as a consumer applies it: `patch` merged into `target`.
public func mergePatched(_ target: JSONValue, by patch: JSONValue) -> JSONValue {
    guard case .object(let members) = patch else { return patch }
    var result: JSONObject
    if case .object(let existing) = target { result = existing } else { result = JSONObject() }
    for key in members.keys {
        let value = members[key]!
        result[key] = value == .null ? nil : mergePatched(result[key] ?? .null, by: value)
    }
    return .object(result)
}

extension JSONValue {
    /// The member `key` of an object; nil for anything else.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let object) = self else { return nil }
        return object[key]
    }

    /// The text of a string; nil for anything else.
    public var stringValue: String? {
        guard case .string(let text) = self else { return nil }
        return text
    }
}
