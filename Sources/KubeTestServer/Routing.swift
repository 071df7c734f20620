import NIOCore
import NIOHTTP1

struct APIRequest {
    var method: HTTPMethod
    var path: String
    var query: [String: String]
    var headers: HTTPHeaders
    var body: [UInt8]
    var tlsUser: String?
}

struct APIResponse {
    var code: Int
    var contentType = "application/json"
    var cacheControl = "no-cache, private"
    var extraHeaders: [(String, String)] = []
    var body: [UInt8]
    var flowControlHeaders = true
    var nosniff = false

    static func json(_ code: Int, _ value: JSON) -> APIResponse {
        APIResponse(code: code, body: value.serialized() + [0x0A])
    }

    static func status(_ code: Int, reason: String?, message: String?, details: JSON? = nil, continueToken: String? = nil) -> APIResponse {
        .json(code, ObjectRules.status(code: code, reason: reason, message: message, details: details, continueToken: continueToken))
    }

    static let plainNotFound = APIResponse(
        code: 404, contentType: "text/plain; charset=utf-8", body: Array("404 page not found\n".utf8), nosniff: true)
}

/// What a watch request turns into once it is accepted.

/// A request path resolved against what the server serves.
struct ResourceTarget {
    var definition: ResourceDefinition
    var namespace: String?
    var name: String?
    var subresource: String?
}

struct Route {
    enum Kind {
        case root, health, version, apiRoot, apisRoot
        case group(String)
        case groupVersion(String, String)
        case resource(ResourceTarget)
        case notFoundJSON, notFoundPlain
    }

    var kind: Kind

    var target: ResourceTarget? {
        if case .resource(let t) = kind { return t }
        return nil
    }

    var definition: ResourceDefinition? { target?.definition }
    var namespace: String? { target?.namespace }

    /// The group a discovery request is about.
    var group: String? {
        switch kind {
        case .group(let group), .groupVersion(let group, _): group
        default: nil
        }
    }

    func verb(method: HTTPMethod, query: [String: String]) -> RequestVerb {
        guard let target else { return .discovery }
        switch method {
        case .GET:
            if target.name == nil {
                let watch = query["watch"]
                return watch == "true" || watch == "1" ? .watch : .list
            }
            return .get
        case .POST: return .create
        case .PUT: return .update
        case .PATCH: return .patch
        case .DELETE: return target.name == nil ? .deletecollection : .delete
        default: return .get
        }
    }

    init(path: String, state: APIServerState) {
        let segments = path.split(separator: "/").map(String.init)
        guard let first = segments.first else { kind = .root; return }
        switch first {
        case "version" where segments.count == 1: kind = .version; return
        case "healthz", "livez", "readyz": kind = .health; return
        case "api":
            if segments.count == 1 { kind = .apiRoot; return }
            guard segments[1] == "v1" else { kind = .notFoundPlain; return }
            if segments.count == 2 { kind = .groupVersion("", "v1"); return }
            kind = Route.resolve(group: "", version: "v1", rest: Array(segments[2...]), state: state, jsonNotFound: true)
        case "apis":
            if segments.count == 1 { kind = .apisRoot; return }
            let group = segments[1]
            guard let served = state.groups.first(where: { $0.name == group && !group.isEmpty }) else { kind = .notFoundPlain; return }
            if segments.count == 2 { kind = .group(group); return }
            let version = segments[2]
            guard served.versions.contains(version) else { kind = .notFoundPlain; return }
            if segments.count == 3 { kind = .groupVersion(group, version); return }
            let builtin = BuiltinCatalog.groups.contains { $0.name == group }
            kind = Route.resolve(group: group, version: version, rest: Array(segments[3...]), state: state, jsonNotFound: builtin)
        default:
            kind = .notFoundPlain
        }
    }

    static func resolve(group: String, version: String, rest: [String], state: APIServerState, jsonNotFound: Bool) -> Kind {
        var parts = rest
        var namespace: String?
        if parts[0] == "namespaces", parts.count > 2, !["status", "finalize"].contains(parts[2]) {
            namespace = parts[1]
            parts = Array(parts[2...])
        }
        guard parts.count <= 3, let definition = state.definition(group: group, version: version, resource: parts[0]) else {
            return jsonNotFound ? .notFoundJSON : .notFoundPlain
        }
        if definition.namespaced == false, namespace != nil { return jsonNotFound ? .notFoundJSON : .notFoundPlain }
        let name = parts.count > 1 ? parts[1] : nil
        let subresource = parts.count > 2 ? parts[2] : nil
        if definition.namespaced, namespace == nil, name != nil { return jsonNotFound ? .notFoundJSON : .notFoundPlain }
        return .resource(ResourceTarget(definition: definition, namespace: namespace, name: name, subresource: subresource))
    }
}
extension APIResponse: Error {}
