import BridgeCore
import KubeAPI
import KubeInformer
import KubeModel
import NIOCore
import Testing

/// The watch rules as table tests of the pure state machine, without I/O.
@Suite("Watcher state machine")
struct WatcherStateMachineTests {
    static let gvr = GroupVersionResource(group: "", version: "v1", resource: "configmaps")

    static func object(_ name: String, uid: String? = nil, rv: String, namespace: String = "ns", generation: Int64? = nil) -> KubeObject {
        var meta = ObjectMeta()
        meta.apiVersion = "v1"
        meta.kind = "ConfigMap"
        meta.name = name
        meta.namespace = namespace
        meta.uid = uid ?? "uid-\(name)"
        meta.resourceVersion = rv
        meta.generation = generation
        return KubeObject(metadata: meta, bytes: ByteBuffer(string: #"{"metadata":{"name":"\#(name)"}}"#))
    }

    static func page(_ items: [KubeObject], rv: String, next: String? = nil) -> ObjectList {
        var list = ObjectList()
        list.kind = "ConfigMapList"
        list.apiVersion = "v1"
        list.resourceVersion = rv
        list.continueToken = next
        list.items = items
        return list
    }

    /// `type name rv` per change, `progress rv` per progress event.
    static func describe(_ events: [ResourceEvent]) -> [String] {
        events.map { event in
            switch event {
            case .change(let change):
                "\(change.type.rawValue) \(change.metadata.name)\(change.metadata.uid == "uid-\(change.metadata.name)" ? "" : "#\(change.metadata.uid)") \(change.metadata.resourceVersion)\(change.finalStateUnknown ? " unknown-final-state" : "")"
            case .progress(_, let rv):
                "progress \(rv)"
            }
        }
    }

    func known(_ objects: [KubeObject]) -> KnownObjects {
        var known = KnownObjects()
        for object in objects { known.apply(Change(type: .synced, resource: Self.gvr, object: object)) }
        return known
    }

    @Test("rule 1: a stored resourceVersion is watched from directly; without one, lists come first")
    func startRules() {
        var resumed = WatcherStateMachine(resource: Self.gvr)
        #expect(resumed.start(resumeFrom: "42") == .watch(resourceVersion: "42"))
        var fresh = WatcherStateMachine(resource: Self.gvr, useStreamingLists: false)
        #expect(fresh.start(resumeFrom: nil) == .list(continueToken: nil))
        var streaming = WatcherStateMachine(resource: Self.gvr)
        #expect(streaming.start(resumeFrom: nil) == .streamingList)
    }

    @Test("rule 1: pages follow continue tokens, each item is emitted, then the watch starts at the list's version")
    func paginatedList() {
        var machine = WatcherStateMachine(resource: Self.gvr, useStreamingLists: false)
        _ = machine.start(resumeFrom: nil)
        let (first, next) = machine.pageReceived(Self.page([Self.object("a", rv: "5"), Self.object("b", rv: "6")], rv: "10", next: "tok"))
        #expect(next == .list(continueToken: "tok"))
        #expect(Self.describe(first) == ["synced a 5", "synced b 6"])
        let (second, watch) = machine.pageReceived(Self.page([Self.object("c", rv: "7")], rv: "10"))
        #expect(Self.describe(second) == ["synced c 7", "progress 10"])
        #expect(watch == .watch(resourceVersion: "10"))
        #expect(machine.known.count == 3)
    }

    @Test("rule 1: a streaming list's initial events end with the initial-events-end bookmark; the stream goes on as a watch")
    func streamingList() {
        var machine = WatcherStateMachine(resource: Self.gvr)
        #expect(machine.start(resumeFrom: nil) == .streamingList)
        var events: [ResourceEvent] = []
        for frame in [WatchFrame.added(Self.object("a", rv: "3")), .added(Self.object("b", rv: "4")), .bookmark(resourceVersion: "9", initialEventsEnd: true),
                      .modified(Self.object("a", rv: "11"))] {
            let (out, outcome) = machine.frameReceived(frame)
            #expect(outcome == .keepReading)
            events += out
        }
        #expect(Self.describe(events) == ["synced a 3", "synced b 4", "progress 9", "modified a 11"])
        #expect(machine.resourceVersion == "11")
    }

    @Test("rule 1: a server that refuses streaming lists (422) gets paginated lists from then on")
    func streamingListRefused() {
        var machine = WatcherStateMachine(resource: Self.gvr)
        _ = machine.start(resumeFrom: nil)
        let refused = KubeAPIError(code: .apiStatus, httpStatus: 422, status: KubeStatus(code: 422, reason: "Invalid", message: "sendInitialEvents is forbidden"),
                                   message: "", request: "watch")
        #expect(machine.failed(refused) == .list(continueToken: nil))
        #expect(!machine.streamingListsSupported)
        // A server that ignores the parameter ends the stream without the bookmark.
        var ignoring = WatcherStateMachine(resource: Self.gvr)
        _ = ignoring.start(resumeFrom: nil)
        _ = ignoring.frameReceived(.added(Self.object("a", rv: "3")))
        #expect(ignoring.streamEnded() == .list(continueToken: nil))
    }

    @Test("rule 2: a bookmark moves the resourceVersion forward as progress, without a change")
    func bookmark() {
        var machine = WatcherStateMachine(resource: Self.gvr)
        _ = machine.start(resumeFrom: "5")
        let (events, outcome) = machine.frameReceived(.bookmark(resourceVersion: "77", initialEventsEnd: false))
        #expect(Self.describe(events) == ["progress 77"])
        #expect(outcome == .keepReading)
        #expect(machine.streamEnded() == .watch(resourceVersion: "77"))
    }

    @Test("rule 3: 410 relists and emits exactly what differs: synced for new or changed, deleted for vanished")
    func relistDiff() {
        var machine = WatcherStateMachine(
            resource: Self.gvr, known: known([Self.object("same", rv: "1"), Self.object("changed", rv: "2"), Self.object("gone", rv: "3")]),
            useStreamingLists: false)
        _ = machine.start(resumeFrom: "3")
        let gone = KubeAPIError(code: .apiStatus, httpStatus: 200, status: KubeStatus(code: 410, reason: "Expired", message: "too old"),
                                message: "too old", request: "watch")
        let (_, outcome) = machine.frameReceived(.error(gone.status!))
        #expect(outcome == .stopReading(.list(continueToken: nil)))
        let (events, next) = machine.pageReceived(Self.page([Self.object("same", rv: "1"), Self.object("changed", rv: "8"), Self.object("new", rv: "9")], rv: "20"))
        #expect(Self.describe(events) == ["synced changed 8", "synced new 9", "deleted gone 3 unknown-final-state", "progress 20"])
        #expect(next == .watch(resourceVersion: "20"))
        #expect(machine.known["uid-gone"] == nil)
    }

    @Test("rule 3: an expired continue token restarts the list, and the diff still holds")
    func expiredContinue() {
        var machine = WatcherStateMachine(resource: Self.gvr, useStreamingLists: false)
        _ = machine.start(resumeFrom: nil)
        _ = machine.pageReceived(Self.page([Self.object("a", rv: "5")], rv: "10", next: "tok"))
        let expired = KubeAPIError(code: .apiStatus, httpStatus: 410, status: KubeStatus(code: 410, reason: "Expired", message: "continue too old"),
                                   message: "", request: "list")
        #expect(machine.failed(expired) == .list(continueToken: nil))
        let (events, _) = machine.pageReceived(Self.page([Self.object("a", rv: "5"), Self.object("b", rv: "12")], rv: "30"))
        #expect(Self.describe(events) == ["synced b 12", "progress 30"], "a was emitted already at the same version")
    }

    @Test("trap: deleted and created again under the same name is a deletion of the old uid and a new object, never a modification")
    func recreatedUnderSameName() {
        var machine = WatcherStateMachine(resource: Self.gvr, known: known([Self.object("app", uid: "old", rv: "4")]), useStreamingLists: false)
        _ = machine.start(resumeFrom: nil)
        let (events, _) = machine.pageReceived(Self.page([Self.object("app", uid: "new", rv: "9")], rv: "10"))
        #expect(Self.describe(events) == ["deleted app#old 4 unknown-final-state", "synced app#new 9", "progress 10"])
    }

    @Test("rule 4: resourceVersions are opaque: only equality matters, never order")
    func opaqueVersions() {
        var machine = WatcherStateMachine(resource: Self.gvr, known: known([Self.object("a", rv: "zz-9")]), useStreamingLists: false)
        _ = machine.start(resumeFrom: nil)
        // "aa-1" sorts before "zz-9" but it is simply different, so it is emitted.
        let (events, next) = machine.pageReceived(Self.page([Self.object("a", rv: "aa-1")], rv: "not-a-number"))
        #expect(Self.describe(events) == ["synced a aa-1", "progress not-a-number"])
        #expect(next == .watch(resourceVersion: "not-a-number"))
    }

    @Test("rule 5: 403 waits long and keeps its place; 429 waits as told, no relist; 5xx backs off and resumes from the last version",
          arguments: [
            (403, Optional<Int>.none, WatcherStateMachine.WaitReason.forbidden),
            (429, Optional(7), WatcherStateMachine.WaitReason.retryAfter(.seconds(7), attempt: 1)),
            (500, Optional<Int>.none, WatcherStateMachine.WaitReason.backoff(attempt: 1)),
            (503, Optional(2), WatcherStateMachine.WaitReason.backoff(attempt: 1)),
          ])
    func failures(code: Int, retryAfter: Int?, expected: WatcherStateMachine.WaitReason) {
        var machine = WatcherStateMachine(resource: Self.gvr)
        _ = machine.start(resumeFrom: "50")
        _ = machine.frameReceived(.modified(Self.object("a", rv: "51")))
        let error = KubeAPIError(code: .apiStatus, httpStatus: code, status: KubeStatus(code: code, reason: nil, message: "x"),
                                 retryAfter: retryAfter.map { .seconds($0) }, message: "x", request: "watch")
        #expect(machine.failed(error) == .wait(expected))
        #expect(machine.waited() == .watch(resourceVersion: "51"))
    }

    @Test("rule 5: consecutive failures back off further; a good frame resets the count")
    func backoffGrows() {
        var machine = WatcherStateMachine(resource: Self.gvr)
        _ = machine.start(resumeFrom: "1")
        let reset = KubeAPIError(code: .transport, message: "reset", request: "watch")
        #expect(machine.failed(reset) == .wait(.backoff(attempt: 1)))
        _ = machine.waited()
        #expect(machine.failed(reset) == .wait(.backoff(attempt: 2)))
        _ = machine.waited()
        _ = machine.frameReceived(.bookmark(resourceVersion: "2", initialEventsEnd: false))
        #expect(machine.failed(reset) == .wait(.backoff(attempt: 1)))
    }

    @Test("rules 6 and 7: a malformed, cut or stalled stream restarts from the last good resourceVersion", arguments: [
        KubeAPIError.Code.malformedResponse, .truncatedStream, .timeout, .transport,
    ])
    func brokenStreams(code: KubeAPIError.Code) {
        var machine = WatcherStateMachine(resource: Self.gvr)
        _ = machine.start(resumeFrom: "1")
        _ = machine.frameReceived(.added(Self.object("a", rv: "2")))
        #expect(machine.failed(KubeAPIError(code: code, message: "broken", request: "watch")) == .wait(.backoff(attempt: 1)))
        #expect(machine.waited() == .watch(resourceVersion: "2"))
    }

    @Test("a resource that is not served any more (404) stops its watcher; objects still known are emitted as deleted")
    func removed() {
        var machine = WatcherStateMachine(resource: Self.gvr, known: known([Self.object("b", rv: "2"), Self.object("a", rv: "1")]))
        _ = machine.start(resumeFrom: "2")
        #expect(machine.failed(KubeAPIError(code: .unexpectedResponse, httpStatus: 404, message: "404 page not found", request: "watch")) == .stop)
        #expect(Self.describe(machine.resourceRemoved()) == ["deleted a 1 unknown-final-state", "deleted b 2 unknown-final-state"])
        #expect(machine.known.count == 0)
    }

    @Test("filters: left-out changes still move the version and the known objects, as progress")
    func emissionFilters() {
        var filter = WatcherStateMachine.EmissionFilter()
        filter.specChangesOnly = true
        filter.changeTypes = [.added, .modified, .synced]
        filter.accepts = { $0.namespace != "kube-system" }
        var machine = WatcherStateMachine(resource: Self.gvr, filter: filter)
        _ = machine.start(resumeFrom: "1")
        var events: [ResourceEvent] = []
        for frame in [
            WatchFrame.added(Self.object("d", rv: "2", generation: 1)),
            .modified(Self.object("d", rv: "3", generation: 1)),  // status only
            .modified(Self.object("d", rv: "4", generation: 2)),  // spec
            .added(Self.object("sys", rv: "5", namespace: "kube-system")),
            .deleted(Self.object("d", rv: "6", generation: 2)),
        ] {
            events += machine.frameReceived(frame).0
        }
        #expect(Self.describe(events) == ["added d 2", "progress 3", "modified d 4", "progress 5", "progress 6"])
        #expect(machine.known.count == 0)
        #expect(machine.resourceVersion == "6")
    }

    /// The names of the changes that ask for a checkpoint row before sinks see them.
    static func unrecorded(_ events: [ResourceEvent]) -> [String] {
        events.compactMap { event in
            guard case .change(let change) = event, change.unrecorded else { return nil }
            return change.metadata.name
        }
    }

    @Test("an object gets its checkpoint row before sinks first see it, once: stored objects and deletions need none")
    func recordingBeforeDelivery() {
        var stored = known([Self.object("old", rv: "1")])
        stored.markStored(uid: "uid-old")
        var machine = WatcherStateMachine(resource: Self.gvr, known: stored)
        _ = machine.start(resumeFrom: "1")
        var events: [ResourceEvent] = []
        for frame in [WatchFrame.modified(Self.object("old", rv: "2")), .added(Self.object("new", rv: "3")), .modified(Self.object("new", rv: "4")),
                      .added(Self.object("brief", rv: "5")), .deleted(Self.object("brief", rv: "6"))] {
            events += machine.frameReceived(frame).0
        }
        #expect(Self.unrecorded(events) == ["new", "brief"])
        #expect(machine.known["uid-new"]?.stored == true)
    }

    @Test("after a restart, objects recorded but never confirmed are sent again by a relist even at the same version, or deleted when gone")
    func relistAfterUnconfirmedRecords() {
        var loaded = KnownObjects()
        for name in ["sent", "vanished"] {
            loaded.set(uid: "uid-\(name)", KnownObjects.Entry(namespace: "ns", name: name, resourceVersion: "7", generation: nil, stored: true, delivered: false))
        }
        var machine = WatcherStateMachine(resource: Self.gvr, known: loaded, useStreamingLists: false)
        #expect(machine.start(resumeFrom: nil) == .list(continueToken: nil))
        let (events, _) = machine.pageReceived(Self.page([Self.object("sent", rv: "7")], rv: "9"))
        #expect(Self.describe(events) == ["synced sent 7", "deleted vanished 7 unknown-final-state", "progress 9"])
        #expect(Self.unrecorded(events).isEmpty, "both have their rows already")
    }
}
