import Foundation

/// How kube-apiserver shapes objects and errors: key order, managed fields, validation, Status bodies.
enum ObjectRules {
    static let metadataOrder = [
        "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
        "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers",
        "managedFields",
    ]
    static let managedFieldsOrder = ["manager", "operation", "apiVersion", "time", "fieldsType", "fieldsV1", "subresource"]

    /// The serialization order of the real server: typed kinds put kind and apiVersion first and
    /// metadata in ObjectMeta's struct order; custom resources are maps, so every key is sorted.
    static func canonical(_ value: JSON, definition: ResourceDefinition) -> JSON {
        if definition.isCustom { return value.sortedKeys() }
        var object = value.ordered(first: ["kind", "apiVersion", "metadata"])
        if var metadata = object["metadata"], metadata.isObject {
            metadata = metadata.ordered(first: metadataOrder)
            if let fields = metadata["managedFields"]?.arrayValue {
                metadata["managedFields"] = .array(fields.map { $0.ordered(first: managedFieldsOrder) })
            }
            object["metadata"] = metadata
        }
        if definition.kind == "CustomResourceDefinition" {
            object = canonicalCRD(object)
        }
        return object
    }

    static let namesOrder = ["plural", "singular", "shortNames", "kind", "listKind", "categories"]

    private static func canonicalCRD(_ crd: JSON) -> JSON {
        var crd = crd
        if var spec = crd["spec"], spec.isObject {
            spec = spec.ordered(first: ["group", "names", "scope", "versions", "conversion", "preserveUnknownFields"])
            if let names = spec["names"] { spec["names"] = names.ordered(first: namesOrder) }
            if let versions = spec["versions"]?.arrayValue {
                spec["versions"] = .array(versions.map { version in
                    var version = version.ordered(first: [
                        "name", "served", "storage", "deprecated", "deprecationWarning", "schema", "subresources",
                        "additionalPrinterColumns", "selectableFields",
                    ])
                    if let schema = version["schema"]?["openAPIV3Schema"] {
                        version["schema"] = .object([("openAPIV3Schema", canonicalSchema(schema))])
                    }
                    return version
                })
            }
            crd["spec"] = spec
        }
        if var status = crd["status"], status.isObject {
            status = status.ordered(first: ["conditions", "acceptedNames", "storedVersions"])
            if let names = status["acceptedNames"] { status["acceptedNames"] = names.ordered(first: namesOrder) }
            crd["status"] = status
        }
        return crd
    }

    /// JSONSchemaProps in struct order, with its maps (properties) sorted.
    private static func canonicalSchema(_ schema: JSON) -> JSON {
        guard case .object = schema else { return schema }
        var result = schema.ordered(first: ["description", "type", "format", "title", "default", "items", "required", "properties"])
        if let properties = result["properties"]?.objectMembers {
            result["properties"] = .object(properties.map { ($0.0, canonicalSchema($0.1)) }.sorted { $0.0 < $1.0 })
        }
        if let items = result["items"] { result["items"] = canonicalSchema(items) }
        return result
    }

    /// The FieldsV1 set of the fields a manager owns: every field present, object fields as
    /// `f:` keys, maps marked with `.`, Go's sorted map order.
    static func fieldsV1(of value: JSON, subresource: String?) -> JSON {
        var members: [(String, JSON)] = []
        for (key, child) in value.objectMembers ?? [] {
            switch key {
            case "apiVersion", "kind":
                continue
            case "metadata":
                var meta: [(String, JSON)] = []
                for metaKey in ["labels", "annotations", "ownerReferences", "finalizers"] {
                    if let field = child[metaKey], subresource == nil {
                        meta.append(("f:\(metaKey)", fieldSet(field)))
                    }
                }
                if !meta.isEmpty { members.append(("f:metadata", .object(meta))) }
            case "status":
                if subresource == "status" { members.append(("f:status", fieldSet(child, top: true))) }
            default:
                if subresource == nil { members.append(("f:\(key)", fieldSet(child))) }
            }
        }
        return JSON.object(members).sortedKeys()
    }

    private static func fieldSet(_ value: JSON, top: Bool = false) -> JSON {
        guard case .object(let members) = value else { return .object([]) }
        var result: [(String, JSON)] = top ? [] : [(".", .object([]))]
        for (key, child) in members { result.append(("f:\(key)", child.isObject ? fieldSet(child) : .object([]))) }
        return .object(result)
    }

    /// The order kube-apiserver keeps managedFields in: by operation (`Apply` before `Update`),
    /// then time (whole seconds, oldest first), then manager, then subresource.
    static func sortedManagedFields(_ entries: [JSON]) -> [JSON] {
        entries.sorted { p, q in
            let key = { (entry: JSON) in
                [entry["operation"]?.stringValue ?? "", entry["time"]?.stringValue ?? "", entry["manager"]?.stringValue ?? "",
                 entry["subresource"]?.stringValue ?? ""]
            }
            return key(p).lexicographicallyPrecedes(key(q))
        }
    }

    static func managedFieldsEntry(manager: String, apiVersion: String, time: String, fields: JSON, subresource: String?) -> JSON {
        var entry: [(String, JSON)] = [
            ("manager", .string(manager)), ("operation", .string("Update")), ("apiVersion", .string(apiVersion)),
            ("time", .string(time)), ("fieldsType", .string("FieldsV1")), ("fieldsV1", fields),
        ]
        if let subresource { entry.append(("subresource", .string(subresource))) }
        return .object(entry)
    }

    // MARK: Validation

    static let subdomainMessage =
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    static let labelMessage =
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    static let configKeyMessage =
        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"

    static func isDNSLabel(_ s: String) -> Bool {
        let bytes = Array(s.utf8)
        guard !bytes.isEmpty, bytes.count <= 63 else { return false }
        func alnum(_ b: UInt8) -> Bool { (0x61...0x7A).contains(b) || (0x30...0x39).contains(b) }
        guard alnum(bytes.first!), alnum(bytes.last!) else { return false }
        return bytes.allSatisfy { alnum($0) || $0 == UInt8(ascii: "-") }
    }

    static func isDNSSubdomain(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 253 else { return false }
        return s.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { isDNSLabel(String($0)) }
    }

    static func isConfigKey(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 253 && s.utf8.allSatisfy { b in
            (0x61...0x7A).contains(b) || (0x41...0x5A).contains(b) || (0x30...0x39).contains(b)
                || b == UInt8(ascii: "-") || b == UInt8(ascii: "_") || b == UInt8(ascii: ".")
        }
    }

    struct Cause {
        var field: String
        var message: String
        var reason = "FieldValueInvalid"
    }

    static func validate(_ object: JSON, definition: ResourceDefinition) -> [Cause] {
        var causes: [Cause] = []
        let name = object["metadata"]?["name"]?.stringValue ?? ""
        if name.isEmpty {
            causes.append(Cause(field: "metadata.name", message: "Required value: name or generateName is required", reason: "FieldValueRequired"))
        } else if definition.resource == "namespaces" {
            if !isDNSLabel(name) {
                causes.append(Cause(field: "metadata.name", message: "Invalid value: \(quoted(name)): \(labelMessage)"))
            }
        } else if !isDNSSubdomain(name) {
            causes.append(Cause(field: "metadata.name", message: "Invalid value: \(quoted(name)): \(subdomainMessage)"))
        }
        if definition.resource == "configmaps" || definition.resource == "secrets" {
            for field in ["data", "binaryData", "stringData"] {
                for (key, _) in object[field]?.objectMembers ?? [] where !isConfigKey(key) {
                    causes.append(Cause(field: "\(field)[\(key)]", message: "Invalid value: \(quoted(key)): \(configKeyMessage)"))
                }
            }
        }
        if definition.resource == "configmaps" {
            // kube-apiserver's ValidateConfigMap: keys and values of data and binaryData together.
            let size = ["data", "binaryData"].flatMap { object[$0]?.objectMembers ?? [] }.reduce(0) { total, member in
                total + member.0.utf8.count + (member.1.stringValue?.utf8.count ?? 0)
            }
            if size > 1_048_576 {
                causes.append(Cause(field: "[]", message: "Too long: must have at most 1048576 bytes", reason: "FieldValueTooLong"))
            }
        }
        if definition.resource == "customresourcedefinitions" {
            let spec = object["spec"]
            let group = spec?["group"]?.stringValue ?? ""
            let plural = spec?["names"]?["plural"]?.stringValue ?? ""
            if group.isEmpty { causes.append(Cause(field: "spec.group", message: "Required value", reason: "FieldValueRequired")) }
            if plural.isEmpty { causes.append(Cause(field: "spec.names.plural", message: "Required value", reason: "FieldValueRequired")) }
            if (spec?["names"]?["kind"]?.stringValue ?? "").isEmpty {
                causes.append(Cause(field: "spec.names.kind", message: "Required value", reason: "FieldValueRequired"))
            }
            if !group.isEmpty, !plural.isEmpty, name != "\(plural).\(group)" {
                causes.append(Cause(field: "metadata.name", message: "Invalid value: \(quoted(name)): must be spec.names.plural+\".\"+spec.group"))
            }
            if (spec?["versions"]?.arrayValue ?? []).isEmpty {
                causes.append(Cause(field: "spec.versions", message: "Invalid value: null: must have exactly one version marked as storage version"))
            }
        }
        return causes
    }

    static func quoted(_ s: String) -> String {
        var out: [UInt8] = []
        JSON.writeString(s, to: &out)
        return String(decoding: out, as: UTF8.self).replacingOccurrences(of: "\\u003c", with: "<")
            .replacingOccurrences(of: "\\u003e", with: ">").replacingOccurrences(of: "\\u0026", with: "&")
    }

    // MARK: Status

    static func status(
        code: Int, reason: String?, message: String?, details: JSON? = nil, continueToken: String? = nil
    ) -> JSON {
        var members: [(String, JSON)] = [
            ("kind", .string("Status")), ("apiVersion", .string("v1")),
            ("metadata", continueToken.map { .object([("continue", .string($0))]) } ?? .object([])),
            ("status", .string(code >= 200 && code < 300 ? "Success" : "Failure")),
        ]
        if let message { members.append(("message", .string(message))) }
        if let reason { members.append(("reason", .string(reason))) }
        if let details { members.append(("details", details)) }
        // Go omits a zero code: success Statuses carry none.
        if code >= 300 { members.append(("code", .int(code))) }
        return .object(members)
    }

    static func details(name: String? = nil, definition: ResourceDefinition?, kind: String? = nil, uid: String? = nil,
                        causes: [Cause] = [], retryAfterSeconds: Int? = nil) -> JSON {
        var members: [(String, JSON)] = []
        if let name { members.append(("name", .string(name))) }
        if let definition, !definition.group.isEmpty { members.append(("group", .string(definition.group))) }
        if let kind = kind ?? definition?.resource { members.append(("kind", .string(kind))) }
        if let uid { members.append(("uid", .string(uid))) }
        if !causes.isEmpty {
            members.append(("causes", .array(causes.map {
                .object([("reason", .string($0.reason)), ("message", .string($0.message)), ("field", .string($0.field))])
            })))
        }
        if let retryAfterSeconds { members.append(("retryAfterSeconds", .int(retryAfterSeconds))) }
        return .object(members)
    }

    // MARK: Time

    static func timestamp(_ date: Date) -> String {
        var time = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&time, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
                      parts.tm_hour, parts.tm_min, parts.tm_sec)
    }

    static func httpDate(_ date: Date) -> String {
        var time = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&time, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        let clock = String(format: "%02d %04d %02d:%02d:%02d", parts.tm_mday, parts.tm_year + 1900, parts.tm_hour, parts.tm_min, parts.tm_sec)
        let dayAndYear = clock.split(separator: " ", maxSplits: 1)
        return "\(days[Int(parts.tm_wday)]), \(dayAndYear[0]) \(months[Int(parts.tm_mon)]) \(dayAndYear[1]) GMT"
    }
}
