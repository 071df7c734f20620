/// A sink's destination name (a Kafka topic, a NATS subject) from placeholders: `{group}` (`core`
/// for the core group), `{version}`, `{resource}`, `{namespace}` and `{name}`. Split once into
/// literal text and placeholders, so that rendering per event is a few appends.
public struct DestinationTemplate: Sendable {
    enum Part: Sendable {
        case text(String)
        case group, version, resource, namespace, name
    }

    public static let placeholders = ["{group}", "{version}", "{resource}", "{namespace}", "{name}"]
    let parts: [Part]

    public init(_ template: String) {
        var parts: [Part] = []
        var rest = Substring(template)
        let known: [(String, Part)] = [("{group}", .group), ("{version}", .version), ("{resource}", .resource), ("{namespace}", .namespace), ("{name}", .name)]
        var text = ""
        while !rest.isEmpty {
            if let (placeholder, part) = known.first(where: { rest.hasPrefix($0.0) }) {
                if !text.isEmpty { parts.append(.text(text)); text = "" }
                parts.append(part)
                rest = rest.dropFirst(placeholder.count)
            } else {
                text.append(rest.removeFirst())
            }
        }
        if !text.isEmpty { parts.append(.text(text)) }
        self.parts = parts
    }

    /// The name for an event. `clusterScoped` stands for the namespace of cluster-scoped objects;
    /// `escape` is applied to each value (not to the literal text).
    public func render(_ event: OutboundEvent, clusterScoped: String, escape: (String) -> String = { $0 }) -> String {
        let resource = event.resource
        return render(group: resource.group.isEmpty ? "core" : resource.group, version: resource.version, resource: resource.resource,
                      namespace: event.namespace ?? clusterScoped, name: { event.envelope.extensions.first { $0.name == "name" }?.value ?? "" },
                      escape: escape)
    }

    public func render(group: String, version: String, resource: String, namespace: String, name: () -> String,
                       escape: (String) -> String = { $0 }) -> String {
        var out = ""
        for part in parts {
            switch part {
            case .text(let text): out += text
            case .group: out += escape(group)
            case .version: out += escape(version)
            case .resource: out += escape(resource)
            case .namespace: out += escape(namespace)
            case .name: out += escape(name())
            }
        }
        return out
    }
}
