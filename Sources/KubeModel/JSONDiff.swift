/// What differs between two states of an object: the JSON Pointers (RFC 6901) of what changed,
/// and the JSON merge patch (RFC 7386) that turns the one into the other.
public enum JSONDiff {
    /// Pointers never reported as changed: they change with every write and say nothing of it.
    public static let ignoredPaths: Set<String> = ["/metadata/managedFields", "/metadata/resourceVersion", "/metadata/generation"]

    /// The pointers of what differs, sorted. A changed scalar is reported at its own pointer; a
    /// member or element added or removed, or a value whose type changed, at the pointer where it
    /// starts (not at every leaf beneath it). When more than `limit` differ, the deepest are
    /// replaced by their parents until at most `limit` remain.
    public static func changedPaths(from old: JSONValue, to new: JSONValue, limit: Int = 64) -> [String] {
        var paths: [String] = []
        collect(old, new, path: "", into: &paths)
        return coarsened(paths, limit: limit)
    }

    private static func collect(_ old: JSONValue?, _ new: JSONValue?, path: String, into paths: inout [String]) {
        if !path.isEmpty, ignoredPaths.contains(path) { return }
        switch (old, new) {
        case (.object(let before)?, .object(let after)?):
            for key in before.keys { collect(before[key], after[key], path: path + "/" + escaped(key), into: &paths) }
            for key in after.keys where before[key] == nil { collect(nil, after[key], path: path + "/" + escaped(key), into: &paths) }
        case (.array(let before)?, .array(let after)?):
            for index in 0..<max(before.count, after.count) {
                collect(index < before.count ? before[index] : nil, index < after.count ? after[index] : nil, path: path + "/\(index)", into: &paths)
            }
        default:
            if old != new { paths.append(path) }
        }
    }

    /// At most `limit` pointers: the parent with the most changed children stands for them (the
    /// deeper of two such parents first), again and again, so that a thousand changed keys of one
    /// ConfigMap become its `/data` while a lone change elsewhere keeps its own pointer.
    static func coarsened(_ paths: [String], limit: Int) -> [String] {
        var paths = Set(paths)
        while paths.count > max(1, limit) {
            var children: [String: Int] = [:]
            for path in paths {
                guard let slash = path.lastIndex(of: "/") else { continue }
                children[String(path[..<slash]), default: 0] += 1
            }
            let depth = { (path: String) in path.utf8.count(where: { $0 == UInt8(ascii: "/") }) }
            guard let parent = children.max(by: { a, b in
                (a.value, depth(a.key), b.key) < (b.value, depth(b.key), a.key)
            })?.key else { break }
            paths = paths.filter { !$0.hasPrefix(parent + "/") }
            paths.insert(parent)
        }
        return paths.sorted()
    }

    /// `~` and `/` in a member name, as RFC 6901 escapes them.
    public static func escaped(_ key: String) -> String {
        escaping(key, ["~": "~0", "/": "~1"])
    }

    /// The RFC 7386 merge patch from `old` to `new`; nil when they are equal. Objects are patched
    /// member by member (a removed member is `null`); anything else, arrays included, is replaced
    /// whole. RFC 7386 cannot set a member to `null` (that removes it).
    public static func mergePatch(from old: JSONValue, to new: JSONValue) -> JSONValue? {
        guard case .object(let before) = old, case .object(let after) = new else { return old == new ? nil : new }
        var patch = JSONObject()
        for key in before.keys where after[key] == nil { patch[key] = .null }
        for key in after.keys {
            guard let value = after[key] else { continue }
            if let previous = before[key] {
                if let change = mergePatch(from: previous, to: value) { patch[key] = change }
            } else {
                patch[key] = value
            }
        }
        return patch.isEmpty ? nil : .object(patch)
    }
}
