import Crypto
import Foundation

/// Discovery: the legacy and aggregated (v2) documents, negotiated as kube-apiserver does.
extension APIServerState {
    enum DiscoveryFormat {
        case legacy
        case aggregated(String)
    }

    /// Content negotiation as kube-apiserver does it: the first acceptable media type in the client's order.
    func negotiate(_ accept: String?) -> DiscoveryFormat? {
        guard let accept, !accept.isEmpty else { return .legacy }
        for range in accept.split(separator: ",") {
            let parts = range.split(separator: ";").map { $0.trimmingSpaces() }
            guard let type = parts.first else { continue }
            var params: [String: String] = [:]
            for p in parts.dropFirst() {
                let kv = p.split(separator: "=", maxSplits: 1).map(String.init)
                if kv.count == 2 { params[kv[0]] = kv[1] }
            }
            if type == "application/json", params["g"] == "apidiscovery.k8s.io", params["as"] == "APIGroupDiscoveryList" {
                if let v = params["v"], options.aggregatedDiscoveryVersions.contains(v) { return .aggregated(v) }
                continue
            }
            if type == "application/json" || type == "*/*" || type == "application/*" {
                if params["as"] == nil { return .legacy }
            }
        }
        return nil
    }

    func discoveryRoot(core: Bool, accept: String?, ifNoneMatch: String?) -> APIResponse {
        guard let format = negotiate(accept) else {
            let status = ObjectRules.status(code: 406, reason: "NotAcceptable",
                                            message: "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf")
            return APIResponse(code: 406, body: Array(status.prettyPrinted().utf8))
        }
        switch format {
        case .legacy:
            if core {
                return .json(200, .object([
                    ("kind", .string("APIVersions")), ("versions", .array([.string("v1")])),
                    ("serverAddressByClientCIDRs", .array([.object([("clientCIDR", .string("0.0.0.0/0")), ("serverAddress", .string("127.0.0.1:\(port)"))])])),
                ]))
            }
            let groupsJSON: [JSON] = groups.filter { !$0.name.isEmpty }.map(groupJSON)
            return .json(200, .object([("kind", .string("APIGroupList")), ("apiVersion", .string("v1")), ("groups", .array(groupsJSON))]))
        case .aggregated(let version):
            let cacheKey = "\(core)/\(version)"
            let cached: (body: [UInt8], etag: String)
            if let hit = discoveryCache[cacheKey] {
                cached = hit
            } else {
                let body = aggregatedDocument(core: core, version: version).serialized() + [0x0A]
                let etag = "\"" + SHA512.hash(data: body).map { String(format: "%02X", $0) }.joined() + "\""
                cached = (body, etag)
                discoveryCache[cacheKey] = cached
            }
            let contentType = "application/json;g=apidiscovery.k8s.io;v=\(version);as=APIGroupDiscoveryList"
            if let ifNoneMatch, ifNoneMatch == cached.etag {
                return APIResponse(code: 304, contentType: contentType, cacheControl: "public",
                                   extraHeaders: [("Etag", cached.etag), ("Vary", "Accept")], body: [])
            }
            return APIResponse(code: 200, contentType: contentType, cacheControl: "public",
                               extraHeaders: [("Etag", cached.etag), ("Vary", "Accept")], body: cached.body)
        }
    }

    func groupJSON(_ group: GroupDefinition) -> JSON {
        let versions: [JSON] = group.versions.map {
            .object([("groupVersion", .string("\(group.name)/\($0)")), ("version", .string($0))])
        }
        return .object([("name", .string(group.name)), ("versions", .array(versions)), ("preferredVersion", versions[0])])
    }

    func groupDocument(_ name: String) -> APIResponse {
        guard let group = groups.first(where: { $0.name == name && !name.isEmpty }) else { return .plainNotFound }
        var document = groupJSON(group)
        document = .object([("kind", .string("APIGroup")), ("apiVersion", .string("v1"))] + (document.objectMembers ?? []))
        return .json(200, document)
    }

    func resourceList(group: String, version: String) -> APIResponse {
        let definitions = groups.first { $0.name == group }?.resources.filter { $0.version == version } ?? []
        var entries: [(String, JSON)] = []
        for d in definitions {
            var entry: [(String, JSON)] = [("name", .string(d.resource)), ("singularName", .string(d.singular)),
                                           ("namespaced", .bool(d.namespaced)), ("kind", .string(d.kind)),
                                           ("verbs", .array(d.verbs.map { .string($0) }))]
            if !d.shortNames.isEmpty { entry.append(("shortNames", .array(d.shortNames.map { .string($0) }))) }
            if !d.categories.isEmpty { entry.append(("categories", .array(d.categories.map { .string($0) }))) }
            entry.append(("storageVersionHash", .string(d.storageVersionHash)))
            entries.append((d.resource, .object(entry)))
            for sub in d.subresources {
                var subEntry: [(String, JSON)] = [("name", .string("\(d.resource)/\(sub.name)")), ("singularName", .string("")),
                                                  ("namespaced", .bool(d.namespaced))]
                if let g = sub.group, let v = sub.version, !(d.isCustom && g == d.group) {
                    subEntry += [("group", .string(g)), ("version", .string(v))]
                }
                subEntry += [("kind", .string(sub.kind)), ("verbs", .array(sub.verbs.map { .string($0) }))]
                entries.append(("\(d.resource)/\(sub.name)", .object(subEntry)))
            }
        }
        entries.sort { $0.0 < $1.0 }
        var document: [(String, JSON)] = [("kind", .string("APIResourceList"))]
        if !group.isEmpty { document.append(("apiVersion", .string("v1"))) }
        document.append(("groupVersion", .string(group.isEmpty ? version : "\(group)/\(version)")))
        document.append(("resources", .array(entries.map(\.1))))
        return .json(200, .object(document))
    }

    func aggregatedDocument(core: Bool, version: String) -> JSON {
        let selected = groups.filter { core ? $0.name.isEmpty : !$0.name.isEmpty }
        let items: [JSON] = selected.map { group in
            let versions: [JSON] = group.versions.map { v in
                let resources: [JSON] = group.resources.filter { $0.version == v }.sorted { $0.resource < $1.resource }.map { d in
                    let responseKind: JSON = .object([
                        ("group", .string(d.isCustom ? d.group : "")), ("version", .string(d.isCustom ? d.version : "")),
                        ("kind", .string(d.kind)),
                    ])
                    var entry: [(String, JSON)] = [
                        ("resource", .string(d.resource)), ("responseKind", responseKind),
                        ("scope", .string(d.namespaced ? "Namespaced" : "Cluster")), ("singularResource", .string(d.singular)),
                        ("verbs", .array(d.verbs.map { .string($0) })),
                    ]
                    if !d.shortNames.isEmpty { entry.append(("shortNames", .array(d.shortNames.map { .string($0) }))) }
                    if !d.categories.isEmpty { entry.append(("categories", .array(d.categories.map { .string($0) }))) }
                    if !d.subresources.isEmpty {
                        entry.append(("subresources", .array(d.subresources.map { sub in
                            .object([
                                ("subresource", .string(sub.name)),
                                ("responseKind", .object([("group", .string(sub.group ?? "")), ("version", .string(sub.version ?? "")),
                                                          ("kind", .string(sub.kind))])),
                                ("verbs", .array(sub.verbs.map { .string($0) })),
                            ])
                        })))
                    }
                    return .object(entry)
                }
                return .object([("version", .string(v)), ("resources", .array(resources)), ("freshness", .string("Current"))])
            }
            let metadata: JSON = group.name.isEmpty ? .object([]) : .object([("name", .string(group.name))])
            return .object([("metadata", metadata), ("versions", .array(versions))])
        }
        return .object([
            ("kind", .string("APIGroupDiscoveryList")), ("apiVersion", .string("apidiscovery.k8s.io/\(version)")),
            ("metadata", .object([])), ("items", .array(items)),
        ])
    }
}
