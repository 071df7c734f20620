
/// CustomResourceDefinitions: establishing a new one, serving its resources, removing them with it.
extension APIServerState {
    var crdDefinition: ResourceDefinition {
        BuiltinCatalog.groups.first { $0.name == "apiextensions.k8s.io" }!.resources[0]
    }

    func prepareNewCRD(_ crd: JSON) -> JSON {
        var crd = crd
        if var spec = crd["spec"] {
            if spec["conversion"] == nil { spec["conversion"] = .object([("strategy", .string("None"))]) }
            crd["spec"] = spec
        }
        let storageVersion = crd["spec"]?["versions"]?.arrayValue?.first { $0["storage"] == .bool(true) }?["name"] ?? .string("v1")
        crd["status"] = .object([
            ("conditions", .null),
            ("acceptedNames", .object([("plural", .string("")), ("kind", .string(""))])),
            ("storedVersions", .array([storageVersion])),
        ])
        return crd
    }

    func scheduleEstablish(name: String) {
        loop.assumeIsolated().scheduleTask(in: options.crdEstablishDelay) { [self] in
            let store = store(for: crdDefinition)
            guard let current = store.objects["/\(name)"] else { return }
            var value = current.value
            let time = ObjectRules.timestamp(now)
            let names = value["spec"]?["names"] ?? .object([])
            value["status"] = .object([
                ("conditions", .array([
                    .object([("type", .string("NamesAccepted")), ("status", .string("True")), ("lastTransitionTime", .string(time)),
                             ("reason", .string("NoConflicts")), ("message", .string("no conflicts found"))]),
                    .object([("type", .string("Established")), ("status", .string("True")), ("lastTransitionTime", .string(time)),
                             ("reason", .string("InitialNamesAccepted")), ("message", .string("the initial names have been accepted"))]),
                ])),
                ("acceptedNames", names),
                ("storedVersions", value["status"]?["storedVersions"] ?? .array([])),
            ])
            var fields = value["metadata"]?["managedFields"]?.arrayValue ?? []
            let statusFields: JSON = .object([("f:status", .object([
                ("f:acceptedNames", .object(((names.objectMembers ?? []).map { ("f:\($0.0)", JSON.object([])) }).sorted { $0.0 < $1.0 })),
                ("f:conditions", .object([
                    ("k:{\"type\":\"Established\"}", Self.conditionFields),
                    ("k:{\"type\":\"NamesAccepted\"}", Self.conditionFields),
                ])),
            ]))])
            fields.append(ObjectRules.managedFieldsEntry(manager: "kube-apiserver", apiVersion: "apiextensions.k8s.io/v1", time: time,
                                                         fields: statusFields, subresource: "status"))
            value["metadata"]?["managedFields"] = .array(ObjectRules.sortedManagedFields(fields))
            commit(.modified, value: value, store: store, definition: crdDefinition, previous: current)
            if let stale = stores[Self.storageOfCRD(value)], stale.isRemoved { stores[stale.storage] = nil }
            rebuildServed()
        }
    }

    static let conditionFields: JSON = .object([
        (".", .object([])), ("f:lastTransitionTime", .object([])), ("f:message", .object([])), ("f:reason", .object([])),
        ("f:status", .object([])), ("f:type", .object([])),
    ])

    static func storageOfCRD(_ crd: JSON) -> String {
        let plural = crd["spec"]?["names"]?["plural"]?.stringValue ?? ""
        let group = crd["spec"]?["group"]?.stringValue ?? ""
        return "\(plural).\(group)"
    }

    func deleteCRD(_ current: StoredObject, store: ResourceStore, definition: ResourceDefinition) -> APIResponse {
        var value = current.value
        let time = ObjectRules.timestamp(now)
        value["metadata"]?["deletionTimestamp"] = .string(time)
        value["metadata"]?["finalizers"] = .array([.string("customresourcecleanup.apiextensions.k8s.io")])
        var conditions = value["status"]?["conditions"]?.arrayValue ?? []
        conditions.append(.object([
            ("type", .string("Terminating")), ("status", .string("True")), ("lastTransitionTime", .string(time)),
            ("reason", .string("InstanceDeletionPending")),
            ("message", .string("CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon")),
        ]))
        value["status"]?["conditions"] = .array(conditions)
        let terminating = commit(.modified, value: value, store: store, definition: definition, previous: current)
        let storageKey = Self.storageOfCRD(value)
        let crName = current.name
        loop.assumeIsolated().scheduleTask(in: options.crdCleanupDelay) { [self] in
            if let crStore = stores[storageKey] {
                let crDefinition = Self.definitions(ofCRD: terminating.value).first
                for key in crStore.sortedKeys {
                    guard let object = crStore.objects[key], let crDefinition else { continue }
                    commit(.deleted, value: object.value, store: crStore, definition: crDefinition, previous: object)
                }
                crStore.isRemoved = true
                self.loop.assumeIsolated().scheduleTask(in: options.crdWatchCloseDelay) {
                    for session in crStore.watchers.values { session.finish() }
                }
            }
            if let latest = store.objects["/\(crName)"] {
                var final = latest.value
                final["metadata"]?["finalizers"] = nil
                commit(.deleted, value: final, store: store, definition: definition, previous: latest)
            }
            rebuildServed()
        }
        return APIResponse(code: 200, body: terminating.bytes + [0x0A])
    }
}
