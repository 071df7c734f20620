import Foundation

/// Writes: create, update, patch, delete, deletecollection, and the commit that feeds the watches.
extension APIServerState {
    /// The field manager of a write: `?fieldManager=`, else the User-Agent up to its first `/`.
    func manager(of request: APIRequest) -> String {
        if let named = request.query["fieldManager"], !named.isEmpty { return named }
        let agent = request.headers.first(name: "user-agent") ?? ""
        let manager = agent.split(separator: "/", maxSplits: 1).first.map(String.init) ?? ""
        return manager.isEmpty ? "unknown" : manager
    }

    func parseBody(_ request: APIRequest, definition: ResourceDefinition) -> Result<JSON, APIResponse> {
        // This server reads JSON only. A protobuf or CBOR body gets 415, which client-go (1.32 and
        // later) answers by sending JSON from then on, as it does with a server that lacks them.
        let contentType = (request.headers.first(name: "content-type") ?? "application/json").split(separator: ";")[0].trimmingCharacters(in: .whitespaces)
        guard contentType == "application/json" || contentType.hasSuffix("+json") || contentType.isEmpty else {
            return .failure(.status(415, reason: "UnsupportedMediaType",
                                    message: "the body of the request was in an unknown format - accepted media types include: application/json"))
        }
        do {
            let value = try JSON(parsing: request.body)
            guard value.isObject else { throw JSONParseError(offset: 0, reason: "expected an object") }
            return .success(value)
        } catch {
            let text = String(decoding: request.body.prefix(30), as: UTF8.self)
            let message = "the object provided is unrecognized (must be of type \(definition.kind)): couldn't get version/kind; json parse error: unexpected end of JSON input (\(text) ...)"
            return .failure(.status(400, reason: "BadRequest", message: message))
        }
    }

    func invalid(_ definition: ResourceDefinition, name: String, causes: [ObjectRules.Cause]) -> APIResponse {
        let rendered = causes.map { "\($0.field): \($0.message)" }
        let list = rendered.count == 1 ? rendered[0] : "[" + rendered.joined(separator: ", ") + "]"
        return .status(422, reason: "Invalid", message: "\(definition.kind) \(ObjectRules.quoted(name)) is invalid: \(list)",
                       details: ObjectRules.details(name: name, definition: nil, kind: definition.kind, causes: causes))
    }

    func create(_ target: ResourceTarget, request: APIRequest) -> APIResponse {
        let definition = target.definition
        guard target.name == nil, target.subresource == nil else {
            return .status(405, reason: "MethodNotAllowed", message: "the server does not allow this method on the requested resource", details: .object([]))
        }
        var value: JSON
        switch parseBody(request, definition: definition) {
        case .success(let v): value = v
        case .failure(let response): return response
        }
        if let kind = value["kind"]?.stringValue, kind != definition.kind {
            return .status(400, reason: "BadRequest", message: "the object provided is unrecognized (must be of type \(definition.kind)): no kind \(ObjectRules.quoted(kind)) is registered for version \(ObjectRules.quoted(definition.apiVersion))")
        }
        var metadata = value["metadata"] ?? .object([])
        if metadata["name"]?.stringValue == nil, let prefix = metadata["generateName"]?.stringValue {
            metadata["name"] = .string(prefix + Self.randomSuffix())
        }
        if let bodyNamespace = metadata["namespace"]?.stringValue, let namespace = target.namespace, bodyNamespace != namespace {
            return .status(400, reason: "BadRequest", message: "the namespace of the provided object does not match the namespace sent on the request")
        }
        value["metadata"] = metadata
        let name = metadata["name"]?.stringValue ?? ""
        let causes = ObjectRules.validate(value, definition: definition)
        if !causes.isEmpty { return invalid(definition, name: name, causes: causes) }
        if definition.namespaced, let namespace = target.namespace, !namespaceExists(namespace) {
            let namespaces = BuiltinCatalog.groups[0].resources.first { $0.resource == "namespaces" }!
            return notFound(namespaces, name: namespace)
        }
        let store = store(for: definition)
        let key = StoredObject.key(namespace: definition.namespaced ? target.namespace : nil, name: name)
        if store.objects[key] != nil {
            return .status(409, reason: "AlreadyExists", message: "\(definition.qualifiedResource) \(ObjectRules.quoted(name)) already exists",
                           details: ObjectRules.details(name: name, definition: definition))
        }
        let time = ObjectRules.timestamp(now)
        value["apiVersion"] = .string(definition.apiVersion)
        value["kind"] = .string(definition.kind)
        if definition.isCustom, definition.hasStatus { value["status"] = nil }
        metadata = value["metadata"] ?? .object([])
        if definition.namespaced { metadata["namespace"] = .string(target.namespace ?? "default") }
        metadata["uid"] = .string(UUID().uuidString.lowercased())
        metadata["creationTimestamp"] = .string(time)
        metadata["resourceVersion"] = nil
        metadata["managedFields"] = nil
        metadata["deletionTimestamp"] = nil
        if definition.tracksGeneration { metadata["generation"] = .int(1) }
        if definition.resource == "namespaces" {
            var labels = metadata["labels"] ?? .object([])
            labels["kubernetes.io/metadata.name"] = .string(name)
            metadata["labels"] = labels
            value["spec"] = value["spec"] ?? .object([("finalizers", .array([.string("kubernetes")]))])
            value["status"] = .object([("phase", .string("Active"))])
        }
        value["metadata"] = metadata
        if definition.resource == "customresourcedefinitions" {
            value = prepareNewCRD(value)
        }
        let fields = ObjectRules.fieldsV1(of: value, subresource: nil)
        var withFields = value
        withFields["metadata"]?["managedFields"] = .array([
            ObjectRules.managedFieldsEntry(manager: manager(of: request), apiVersion: definition.apiVersion, time: time, fields: fields, subresource: nil),
        ])
        let object = commit(.added, value: withFields, store: store, definition: definition, previous: nil)
        if definition.resource == "customresourcedefinitions" {
            scheduleEstablish(name: name)
        }
        return APIResponse(code: 201, body: object.bytes + [0x0A])
    }

    func namespaceExists(_ namespace: String) -> Bool {
        stores["namespaces"]?.objects["/\(namespace)"] != nil
    }

    static func randomSuffix() -> String {
        let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
        return String((0..<5).map { _ in alphabet.randomElement()! })
    }

    /// Stores a change: a new resourceVersion, the canonical form, the log entry and the watchers' wake-up.
    @discardableResult
    func commit(_ type: WatchEventType, value: JSON, store: ResourceStore, definition: ResourceDefinition, previous: StoredObject?) -> StoredObject {
        revision += 1
        var value = value
        value["metadata"]?["resourceVersion"] = .string(String(revision))
        value = ObjectRules.canonical(value, definition: definition)
        let namespace = value["metadata"]?["namespace"]?.stringValue
        let name = value["metadata"]?["name"]?.stringValue ?? ""
        let object = StoredObject(
            value: value, key: StoredObject.key(namespace: namespace, name: name), namespace: namespace, name: name,
            uid: value["metadata"]?["uid"]?.stringValue ?? "", resourceVersion: revision)
        switch type {
        case .added, .modified:
            store.objects[object.key] = object
            store.insertKey(object.key)
        case .deleted:
            store.objects[object.key] = nil
            store.removeKey(object.key)
        }
        store.log.append(LogEntry(type: type, revision: revision, object: object, previous: previous))
        if options.recordHistory {
            history.append(KubeTestServer.HistoryEntry(storage: store.storage, type: type.rawValue, uid: object.uid, resourceVersion: revision,
                                                       namespace: object.namespace, name: object.name))
        }
        trimWatchCache(store)
        for session in store.watchers.values { session.pump() }
        return object
    }

    func trimWatchCache(_ store: ResourceStore) {
        let capacity = options.watchCacheCapacity
        guard store.log.count > capacity + capacity / 4 else { return }
        let excess = store.log.count - capacity
        let cutoff = store.log.entry(at: store.log.firstSequence + excess - 1).revision
        store.log.trim(through: cutoff, keepFrom: store.oldestWatchCursor)
    }

    func update(_ target: ResourceTarget, request: APIRequest) -> APIResponse {
        let definition = target.definition
        guard let name = target.name else {
            return .status(405, reason: "MethodNotAllowed", message: "the server does not allow this method on the requested resource", details: .object([]))
        }
        switch parseBody(request, definition: definition) {
        case .failure(let response): return response
        case .success(let value):
            if let bodyName = value["metadata"]?["name"]?.stringValue, bodyName != name {
                return .status(400, reason: "BadRequest", message: "the name of the object (\(bodyName)) does not match the name on the URL (\(name))")
            }
            let precondition = value["metadata"]?["resourceVersion"]?.stringValue
            return write(target, name: name, newValue: { _ in value }, precondition: precondition, request: request)
        }
    }

    func patch(_ target: ResourceTarget, request: APIRequest) -> APIResponse {
        let definition = target.definition
        guard let name = target.name else {
            return .status(405, reason: "MethodNotAllowed", message: "the server does not allow this method on the requested resource", details: .object([]))
        }
        let contentType = request.headers.first(name: "content-type") ?? ""
        guard contentType.hasPrefix("application/merge-patch+json") || contentType.hasPrefix("application/strategic-merge-patch+json") else {
            return .status(415, reason: "UnsupportedMediaType", message: "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json")
        }
        switch parseBody(request, definition: definition) {
        case .failure(let response): return response
        case .success(let patch):
            let precondition = patch["metadata"]?["resourceVersion"]?.stringValue
            return write(target, name: name, newValue: { $0.merging(patch: patch) }, precondition: precondition, request: request)
        }
    }

    func write(_ target: ResourceTarget, name: String, newValue: (JSON) -> JSON, precondition: String?, request: APIRequest) -> APIResponse {
        let definition = target.definition
        let store = store(for: definition)
        let key = StoredObject.key(namespace: definition.namespaced ? target.namespace : nil, name: name)
        guard let current = store.objects[key] else { return notFound(definition, name: name) }
        if let precondition, !precondition.isEmpty, precondition != String(current.resourceVersion) {
            return .status(409, reason: "Conflict", message: "Operation cannot be fulfilled on \(definition.qualifiedResource) \(ObjectRules.quoted(name)): the object has been modified; please apply your changes to the latest version and try again",
                           details: ObjectRules.details(name: name, definition: definition))
        }
        var value = newValue(current.value)
        let causes = ObjectRules.validate(value, definition: definition)
        if !causes.isEmpty { return invalid(definition, name: name, causes: causes) }
        // Identity and server-owned fields stay as stored.
        let old = current.value
        var metadata = value["metadata"] ?? .object([])
        for field in ["name", "namespace", "uid", "creationTimestamp", "generation", "deletionTimestamp"] {
            metadata[field] = old["metadata"]?[field]
        }
        metadata["managedFields"] = old["metadata"]?["managedFields"]
        value["metadata"] = metadata
        value["apiVersion"] = old["apiVersion"]
        value["kind"] = old["kind"]
        let subresource = target.subresource
        if definition.hasStatus {
            if subresource == "status" {
                var kept = old
                kept["status"] = value["status"]
                value = kept
            } else {
                value["status"] = old["status"]
            }
        }
        if Self.sameIgnoringVersion(value, old) {
            return APIResponse(code: 200, body: render(current, as: definition) + [0x0A])
        }
        if definition.tracksGeneration, subresource == nil, Self.specChanged(old, value) {
            value["metadata"]?["generation"] = .int((old["metadata"]?["generation"]?.int64Value ?? 0) + 1)
        }
        let manager = manager(of: request)
        let fields = ObjectRules.fieldsV1(of: value, subresource: subresource)
        var entries = (old["metadata"]?["managedFields"]?.arrayValue ?? []).filter {
            !($0["manager"]?.stringValue == manager && $0["subresource"]?.stringValue == subresource)
        }
        entries.append(ObjectRules.managedFieldsEntry(manager: manager, apiVersion: definition.apiVersion,
                                                      time: ObjectRules.timestamp(now), fields: fields, subresource: subresource))
        value["metadata"]?["managedFields"] = .array(ObjectRules.sortedManagedFields(entries))
        let object = commit(.modified, value: value, store: store, definition: definition, previous: current)
        if definition.resource == "customresourcedefinitions" { rebuildServed() }
        return APIResponse(code: 200, body: render(object, as: definition) + [0x0A])
    }

    static func sameIgnoringVersion(_ a: JSON, _ b: JSON) -> Bool {
        var a = a
        var b = b
        a["metadata"]?["resourceVersion"] = nil
        b["metadata"]?["resourceVersion"] = nil
        a["metadata"]?["managedFields"] = nil
        b["metadata"]?["managedFields"] = nil
        return a.sortedKeys() == b.sortedKeys()
    }

    static func specChanged(_ old: JSON, _ new: JSON) -> Bool {
        var a = old
        var b = new
        for key in ["metadata", "status"] {
            a[key] = nil
            b[key] = nil
        }
        return a.sortedKeys() != b.sortedKeys()
    }

    func delete(_ target: ResourceTarget, request: APIRequest) -> APIResponse {
        let definition = target.definition
        guard let name = target.name else { return deleteCollection(target, query: [:]) }
        let store = store(for: definition)
        let key = StoredObject.key(namespace: definition.namespaced ? target.namespace : nil, name: name)
        guard let current = store.objects[key] else { return notFound(definition, name: name) }
        if !request.body.isEmpty, let options = try? JSON(parsing: request.body), let preconditions = options["preconditions"] {
            if let uid = preconditions["uid"]?.stringValue, uid != current.uid {
                return .status(409, reason: "Conflict", message: "Operation cannot be fulfilled on \(definition.qualifiedResource) \(ObjectRules.quoted(name)): Precondition failed: UID in precondition: \(uid), UID in object meta: \(current.uid)",
                               details: ObjectRules.details(name: name, definition: definition))
            }
            if let rv = preconditions["resourceVersion"]?.stringValue, rv != String(current.resourceVersion) {
                return .status(409, reason: "Conflict", message: "Operation cannot be fulfilled on \(definition.qualifiedResource) \(ObjectRules.quoted(name)): Precondition failed: ResourceVersion in precondition: \(rv), ResourceVersion in object meta: \(current.resourceVersion)",
                               details: ObjectRules.details(name: name, definition: definition))
            }
        }
        if definition.resource == "customresourcedefinitions" {
            return deleteCRD(current, store: store, definition: definition)
        }
        commit(.deleted, value: current.value, store: store, definition: definition, previous: current)
        return .json(200, ObjectRules.status(code: 200, reason: nil, message: nil,
                                             details: ObjectRules.details(name: name, definition: definition, uid: current.uid)))
    }

    func deleteCollection(_ target: ResourceTarget, query: [String: String]) -> APIResponse {
        let definition = target.definition
        let store = store(for: definition)
        let selector = try? query["labelSelector"].map(LabelSelector.init(parsing:))
        let prefix = target.namespace.map { "/\($0)/" }
        for key in store.sortedKeys where prefix == nil || key.hasPrefix(prefix!) {
            guard let object = store.objects[key] else { continue }
            if let selector = selector ?? nil, !selector.matches(object.labels) { continue }
            commit(.deleted, value: object.value, store: store, definition: definition, previous: object)
        }
        return .json(200, ObjectRules.status(code: 200, reason: nil, message: nil, details: nil))
    }
}
