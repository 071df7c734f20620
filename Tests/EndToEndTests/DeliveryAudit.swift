import KubeTestServer
import TestSupport

/// Compares what sinks received with every change the API server made: at-least-once, in order
/// per object, duplicates identical.
///
/// A relist (the bridge restarted before its first checkpoint of a resource, or the checkpoint
/// was compacted) cannot see history: it sends an object's current state as `synced`, which stands
/// for every change before it, and the deletion of an object it knew and that is gone as `deleted`
/// with `finalstateunknown`, which stands for the rest of the object's changes. An object created
/// and deleted while nobody watched may reach no sink at all; but once one sink saw it, every sink
/// gets at least its deletion.
struct DeliveryAudit {
    /// One delivered event, by its CloudEvents attributes.
    struct Delivered {
        var id: String
        var uid: String
        var resourceVersion: Int64
        var changeType: String
        var finalStateUnknown: Bool

        init(id: String, uid: String, resourceVersion: Int64, changeType: String, finalStateUnknown: Bool) {
            self.id = id
            self.uid = uid
            self.resourceVersion = resourceVersion
            self.changeType = changeType
            self.finalStateUnknown = finalStateUnknown
        }

        /// From a structured event (the file sink's lines).
        init?(_ event: [String: Any]) {
            guard let id = event["id"] as? String, let uid = event["uid"] as? String,
                  let version = Int64(event["resourceversion"] as? String ?? ""), let type = event["changetype"] as? String else { return nil }
            self.init(id: id, uid: uid, resourceVersion: version, changeType: type, finalStateUnknown: Self.isTrue(event["finalstateunknown"]))
        }

        /// A Boolean attribute: a JSON boolean in the JSON event format, the string `true` where it
        /// came from a header (a receiver that records binary-mode events as they arrived).
        static func isTrue(_ value: Any?) -> Bool {
            value as? Bool == true || value as? String == "true"
        }

        /// From the attributes of an event read from a broker.
        init?(attributes: [String: String]) {
            guard let id = attributes["id"], let uid = attributes["uid"], let version = Int64(attributes["resourceversion"] ?? ""),
                  let type = attributes["changetype"] else { return nil }
            self.init(id: id, uid: uid, resourceVersion: version, changeType: type, finalStateUnknown: attributes["finalstateunknown"] == "true")
        }
    }

    /// Changes neither delivered nor covered by a relist.
    var missing: [String] = []
    /// Objects whose first arrivals are not in resourceVersion order.
    var disorder: [String] = []
    /// Ids delivered twice for different states.
    var conflicting: [String] = []
    var duplicates = 0

    /// The audits of a broker sink and the file sink of one run, each held to what the other saw.
    static func pair(_ delivered: [Delivered], file: [Delivered], history: [KubeTestServer.HistoryEntry]) -> (sink: DeliveryAudit, file: DeliveryAudit) {
        (DeliveryAudit(delivered: delivered, history: history, seenElsewhere: Set(file.map(\.uid))),
         DeliveryAudit(delivered: file, history: history, seenElsewhere: Set(delivered.map(\.uid))))
    }

    /// `seenElsewhere`: the uids other sinks of the same run received; each of them must reach
    /// this sink too. `historyEnds`: false when `history` stops at a point the deliveries may have
    /// passed (a checkpoint), so that an inferred deletion may stand for a deletion after it.
    init(delivered: [Delivered], history: [KubeTestServer.HistoryEntry], seenElsewhere: Set<String> = [], historyEnds: Bool = true) {
        var byID: [String: Delivered] = [:]
        var arrivals: [String: [Delivered]] = [:]
        var everything: [String: [Delivered]] = [:]
        for event in delivered {
            everything[event.uid, default: []].append(event)
            if let earlier = byID[event.id] {
                duplicates += 1
                // One state has one id whether a watch or a relist delivered it: added or modified once, synced again.
                if (earlier.changeType == "deleted") != (event.changeType == "deleted") || earlier.resourceVersion != event.resourceVersion {
                    conflicting.append(event.id)
                }
                continue
            }
            byID[event.id] = event
            arrivals[event.uid, default: []].append(event)
        }
        for (uid, changes) in Dictionary(grouping: history, by: \.uid) {
            let name = "\(changes[0].storage) \(changes[0].name)"
            let last = changes.max { $0.resourceVersion < $1.resourceVersion }!
            guard let arrived = arrivals[uid] else {
                if last.type != "DELETED" || seenElsewhere.contains(uid) { missing.append("\(name): nothing delivered") }
                continue
            }
            // An inferred deletion carries the last version the bridge knew: it comes last whatever its version.
            let ordered = arrived.filter { !$0.finalStateUnknown }.map(\.resourceVersion)
            if ordered != ordered.sorted() {
                let all = everything[uid, default: []].map { "\($0.resourceVersion) \($0.changeType)" }.joined(separator: ", ")
                let made = changes.sorted { $0.resourceVersion < $1.resourceVersion }.map { "\($0.resourceVersion) \($0.type)" }.joined(separator: ", ")
                disorder.append("\(name): first arrivals \(ordered); every arrival: \(all); the server made: \(made)")
            }
            if arrived.contains(where: \.finalStateUnknown) {
                if last.type != "DELETED", historyEnds { missing.append("\(name): inferred deleted, but it exists") }
                continue
            }
            let versions = Set(ordered)
            // Only a list's `synced` state stands for the changes before it; an object first seen
            // through a watch must have every change from its creation on.
            let first = arrived.first { !$0.finalStateUnknown }?.changeType == "synced" ? ordered.min() ?? 0 : 0
            let coveredThrough = arrived.filter { $0.changeType == "synced" }.map(\.resourceVersion).max() ?? 0
            for change in changes where change.resourceVersion > max(first, coveredThrough) && !versions.contains(change.resourceVersion) {
                missing.append("\(name) \(change.type) rv=\(change.resourceVersion)")
            }
            if !versions.contains(last.resourceVersion) { missing.append("\(name): final \(last.type) rv=\(last.resourceVersion)") }
        }
    }
}

/// The crash scenario the run tests share: churn on ConfigMaps, Secrets, Deployments and a CRD
/// installed two seconds in; the bridge SIGKILLed `kills` times, each after `alive` milliseconds;
/// then the churn stops and the bridge starts once more.
enum CrashRun {
    static let resources = ["configmaps", "secrets", "deployments.apps", "widgets.example.com"]

    /// Returns the server's changes of the churned resources, and the newest version among them.
    static func run(server: KubeTestServer, bridge: BridgeProcess, kills: Int, alive: ClosedRange<Int>) async throws
        -> (history: [KubeTestServer.HistoryEntry], finalVersion: Int64) {
        var churnOptions = Churn.Options()
        churnOptions.rate = 60
        churnOptions.customResources = [.widgets(installAfter: .seconds(2))]
        churnOptions.objectsPerKind = 4
        let churn = Task { try await Churn(server: server, options: churnOptions).run() }
        var random = SystemRandomNumberGenerator()
        for _ in 0..<kills {
            let before = try await server.currentResourceVersion()
            try bridge.start()
            try await Task.sleep(for: .milliseconds(Int.random(in: alive, using: &random)))
            // On a loaded machine (the whole suite runs in parallel) the churn can fall far behind
            // its rate: each life of the bridge sees at least ten changes.
            try await waitUntil(timeout: .seconds(60), interval: .milliseconds(50)) {
                (Int64(try await server.currentResourceVersion()) ?? 0) >= (Int64(before) ?? 0) + 10
            }
            await bridge.kill()
        }
        churn.cancel()
        _ = try? await churn.value
        try bridge.start()
        try await bridge.waitUntilWatching()
        let history = try await server.history().filter { resources.contains($0.storage) }
        return (history, history.map(\.resourceVersion).max() ?? 0)
    }
}
