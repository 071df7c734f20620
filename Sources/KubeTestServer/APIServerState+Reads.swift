import NIOCore

/// Reads: get, list (pages, continue tokens, resourceVersion semantics) and watch.
extension APIServerState {
    func get(_ target: ResourceTarget) -> APIResponse {
        guard let name = target.name else { return .plainNotFound }
        let store = store(for: target.definition)
        guard let object = store.objects[StoredObject.key(namespace: target.namespace, name: name)] else {
            return notFound(target.definition, name: name)
        }
        return APIResponse(code: 200, body: render(object, as: target.definition) + [0x0A])
    }

    func notFound(_ definition: ResourceDefinition, name: String) -> APIResponse {
        .status(404, reason: "NotFound", message: "\(definition.qualifiedResource) \(ObjectRules.quoted(name)) not found",
                details: ObjectRules.details(name: name, definition: definition))
    }

    /// The object's bytes as the given group version serves it.
    func render(_ object: StoredObject, as definition: ResourceDefinition) -> [UInt8] {
        if object.value["apiVersion"]?.stringValue == definition.apiVersion { return object.bytes }
        var value = object.value
        value["apiVersion"] = .string(definition.apiVersion)
        if definition.isCustom {
            return value.sortedKeys().serialized()
        }
        return ObjectRules.canonical(value, definition: definition).serialized()
    }

    /// A typed list item: the object without kind and apiVersion. Typed objects are stored with
    /// those two keys first, so cutting the prefix off the bytes avoids serializing again.
    func renderListItem(_ object: StoredObject, as definition: ResourceDefinition) -> [UInt8] {
        let bytes = render(object, as: definition)
        if definition.isCustom { return bytes }
        var prefix: [UInt8] = Array(#"{"kind":"#.utf8)
        JSON.writeString(definition.kind, to: &prefix)
        prefix += Array(#","apiVersion":"#.utf8)
        JSON.writeString(definition.apiVersion, to: &prefix)
        prefix.append(UInt8(ascii: ","))
        if bytes.count > prefix.count, bytes.starts(with: prefix) {
            return [UInt8(ascii: "{")] + bytes[prefix.count...]
        }
        var value = object.value
        value["kind"] = nil
        value["apiVersion"] = nil
        return value.serialized()
    }

    struct ContinueToken {
        var revision: Int64
        var start: String
    }

    static func encodeContinue(revision: Int64, start: String) -> String {
        let json: JSON = .object([("v", .string("meta.k8s.io/v1")), ("rv", .int(revision)), ("start", .string(start))])
        return base64(json.serialized(), urlSafe: true, padded: false)
    }

    static func decodeContinue(_ token: String) -> ContinueToken? {
        guard let bytes = base64Decode(token), let json = try? JSON(parsing: bytes),
              json["v"]?.stringValue == "meta.k8s.io/v1", let rv = json["rv"]?.int64Value,
              let start = json["start"]?.stringValue
        else { return nil }
        return ContinueToken(revision: rv, start: start)
    }

    /// A request's label and field selectors, or the 400 kube-apiserver answers a malformed one with.
    func selectors(_ query: [String: String]) -> Result<(label: LabelSelector?, field: FieldSelector?), APIResponse> {
        do {
            let label = try query["labelSelector"].flatMap { $0.isEmpty ? nil : try LabelSelector(parsing: $0) }
            let field = try query["fieldSelector"].flatMap { $0.isEmpty ? nil : try FieldSelector(parsing: $0) }
            return .success((label, field))
        } catch let error as SelectorError {
            return .failure(.status(400, reason: "BadRequest", message: "unable to parse requirement: \(ObjectRules.quoted(error.text))"))
        } catch {
            return .failure(.status(400, reason: "BadRequest", message: "\(error)"))
        }
    }

    func list(_ target: ResourceTarget, query: [String: String]) -> APIResponse {
        let definition = target.definition
        let store = store(for: definition)
        let labelSelector: LabelSelector?, fieldSelector: FieldSelector?
        switch selectors(query) {
        case .success(let parsed): (labelSelector, fieldSelector) = parsed
        case .failure(let response): return response
        }
        let limit = query["limit"].flatMap(Int.init).flatMap { $0 > 0 ? $0 : nil }
        var snapshotRevision = revision
        var startKey: String?
        if let token = query["continue"], !token.isEmpty {
            guard let decoded = Self.decodeContinue(token) else {
                return .status(400, reason: "BadRequest", message: "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
            }
            if decoded.revision < compactedRevision || decoded.revision < store.log.floorRevision {
                let fresh = Self.encodeContinue(revision: -1, start: String(decoded.start.dropFirst()))
                return .status(410, reason: "Expired", message: "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.", continueToken: fresh)
            }
            snapshotRevision = decoded.revision < 0 ? revision : decoded.revision
            startKey = decoded.start.hasPrefix("/") ? decoded.start : "/" + decoded.start
        } else if let rvText = query["resourceVersion"], !rvText.isEmpty {
            guard let rv = Int64(rvText), rv >= 0 else {
                return .status(400, reason: "BadRequest", message: "invalid resource version: resourceVersion: Invalid value: \(ObjectRules.quoted(rvText)): strconv.ParseUint: parsing \(ObjectRules.quoted(rvText)): invalid syntax")
            }
            let match = query["resourceVersionMatch"] ?? ""
            if rv > revision {
                return tooLargeResourceVersion(rv)
            }
            if match == "Exact" {
                if rv < compactedRevision || rv < store.log.floorRevision {
                    return .status(410, reason: "Expired", message: "The resourceVersion for the provided list is too old.")
                }
                snapshotRevision = rv
            }
        }
        let namespaceKeyPrefix = target.namespace.map { "/\($0)/" }
        var items: [[UInt8]] = []
        var lastKey: String?
        var remaining = 0
        var more = false
        let effectiveStart = startKey ?? namespaceKeyPrefix
        let snapshot = store.snapshot(at: snapshotRevision, after: effectiveStart)
        for object in snapshot {
            if let prefix = namespaceKeyPrefix, !object.key.hasPrefix(prefix) {
                if object.key > prefix { break }
                continue
            }
            if let labelSelector, !labelSelector.matches(object.labels) { continue }
            if let fieldSelector, !fieldSelector.matches(object) { continue }
            if let limit, items.count >= limit {
                more = true
                if labelSelector == nil, fieldSelector == nil, snapshot.overlay.isEmpty, let lastKey {
                    // Counting the rest by position, not by walking it: pages of large lists stay cheap.
                    let end = namespaceKeyPrefix.map { store.lowerBound($0 + "\u{10FFFF}") } ?? store.sortedKeys.count
                    remaining = end - store.lowerBound(lastKey) - 1
                    break
                }
                remaining += 1
                continue
            }
            items.append(renderListItem(object, as: definition))
            lastKey = object.key
        }
        var metadata: [(String, JSON)] = [("resourceVersion", .string(String(snapshotRevision)))]
        if more, let lastKey {
            metadata.append(("continue", .string(Self.encodeContinue(revision: snapshotRevision, start: lastKey + "\u{0}"))))
            if labelSelector == nil, fieldSelector == nil { metadata.append(("remainingItemCount", .int(remaining))) }
        } else if definition.isCustom {
            metadata.append(("continue", .string("")))
        }
        let listKind = "\(definition.kind)List"
        var head: JSON = .object([("kind", .string(listKind)), ("apiVersion", .string(definition.apiVersion)),
                                  ("metadata", .object(metadata))])
        if definition.isCustom { head = head.sortedKeys() }
        // Items are spliced in as bytes: serializing them again would cost as much as the list itself.
        var body: [UInt8] = []
        body.reserveCapacity(items.reduce(256) { $0 + $1.count + 1 })
        let itemsArray: [UInt8] = {
            var out: [UInt8] = [UInt8(ascii: "[")]
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                out += item
            }
            out.append(UInt8(ascii: "]"))
            return out
        }()
        if definition.isCustom {
            // Alphabetical: apiVersion, items, kind, metadata.
            body += Array("{\"apiVersion\":".utf8)
            JSON.writeString(definition.apiVersion, to: &body)
            body += Array(",\"items\":".utf8) + itemsArray + Array(",\"kind\":".utf8)
            JSON.writeString(listKind, to: &body)
            body += Array(",\"metadata\":".utf8)
            (head["metadata"] ?? .object([])).write(to: &body)
            body.append(UInt8(ascii: "}"))
        } else {
            head.write(to: &body)
            body.removeLast()
            body += Array(",\"items\":".utf8) + itemsArray + [UInt8(ascii: "}")]
        }
        body.append(0x0A)
        return APIResponse(code: 200, body: body)
    }

    func tooLargeResourceVersion(_ rv: Int64) -> APIResponse {
        .status(504, reason: "Timeout", message: "Too large resource version: \(rv), current: \(revision)",
                details: .object([
                    ("causes", .array([.object([("reason", .string("ResourceVersionTooLarge")), ("message", .string("Too large resource version"))])])),
                    ("retryAfterSeconds", .int(1)),
                ]))
    }

    func watch(_ target: ResourceTarget, query: [String: String], fault: FaultAction?) -> Outcome {
        let definition = target.definition
        let store = store(for: definition)
        let labelSelector: LabelSelector?, fieldSelector: FieldSelector?
        switch selectors(query) {
        case .success(let parsed): (labelSelector, fieldSelector) = parsed
        case .failure(let response): return .respond(response)
        }
        let rvText = query["resourceVersion"] ?? ""
        let sendInitialEvents = query["sendInitialEvents"].map { $0 == "true" || $0 == "1" }
        let allowBookmarks = query["allowWatchBookmarks"] == "true" || query["allowWatchBookmarks"] == "1"
        let timeout = query["timeoutSeconds"].flatMap(Int64.init).map { TimeAmount.seconds($0) }
        if sendInitialEvents != nil {
            if !options.watchListEnabled {
                return .respond(.status(422, reason: "Invalid", message: "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
                                        details: .object([("kind", .string("ListOptions")), ("group", .string("meta.k8s.io")),
                                                          ("causes", .array([.object([("reason", .string("FieldValueForbidden")), ("message", .string("Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled")), ("field", .string("sendInitialEvents"))])]))])))
            }
            if query["resourceVersionMatch"] != "NotOlderThan" {
                return .respond(.status(422, reason: "Invalid", message: "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"))
            }
        }
        var plan = WatchPlan(
            store: store, definition: definition, namespace: target.namespace, labelSelector: labelSelector,
            fieldSelector: fieldSelector, initialObjects: [], sendInitialEventsEnd: false, startSequence: store.log.endSequence,
            startRevision: revision, allowBookmarks: allowBookmarks, timeout: timeout, errorLine: nil, fault: fault)
        let wantsInitialEvents = sendInitialEvents ?? (rvText.isEmpty || rvText == "0")
        if !rvText.isEmpty {
            guard let rv = Int64(rvText), rv >= 0 else {
                return .respond(.status(500, reason: nil, message: "resourceVersion: Invalid value: \(ObjectRules.quoted(rvText)): strconv.ParseUint: parsing \(ObjectRules.quoted(rvText)): invalid syntax"))
            }
            if rv > revision, !wantsInitialEvents {
                return .respond(tooLargeResourceVersion(rv))
            }
            if !wantsInitialEvents, rv != 0 {
                let expired: Bool
                let message: String
                if definition.watchCached {
                    expired = rv < store.log.floorRevision
                    message = "too old resource version: \(rv) (\(store.log.oldestRevision ?? revision))"
                } else {
                    expired = rv < compactedRevision || rv < store.log.floorRevision
                    message = "The resourceVersion for the provided watch is too old."
                }
                if expired {
                    plan.errorLine = ObjectRules.status(code: 410, reason: "Expired", message: message)
                    return .watch(plan)
                }
                plan.startSequence = store.log.firstSequence(after: rv)
                plan.startRevision = rv
            }
        }
        if wantsInitialEvents {
            var initial: [StoredObject] = []
            let prefix = target.namespace.map { "/\($0)/" }
            for object in store.snapshot(at: revision, after: prefix) {
                if let prefix, !object.key.hasPrefix(prefix) { break }
                if let labelSelector, !labelSelector.matches(object.labels) { continue }
                if let fieldSelector, !fieldSelector.matches(object) { continue }
                initial.append(object)
            }
            plan.initialObjects = initial
            plan.sendInitialEventsEnd = allowBookmarks
            plan.startSequence = store.log.endSequence
            plan.startRevision = revision
        }
        return .watch(plan)
    }
}
