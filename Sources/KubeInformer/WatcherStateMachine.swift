import KubeModel
import KubeAPI

/// The rules of one resource's list and watch, as a value: each step takes what happened and
/// returns what to do next, and the `Watcher` does the I/O. client-go's reflector and kube-rs'
/// watcher are the models; what this adds is the diff against the objects already emitted, so
/// that a relist emits exactly what changed while nobody watched.
public struct WatcherStateMachine: Sendable {
    public enum Action: Sendable, Equatable {
        /// List a page; nil for the first one.
        case list(continueToken: String?)
        /// Watch from this resourceVersion.
        case watch(resourceVersion: String)
        /// A streaming list: the current state as events, closed by the initial-events-end bookmark,
        /// and then the same stream as a watch.
        case streamingList
        /// Sleep, then call `waited()`.
        case wait(WaitReason)
        /// The resource is not served any more (404): the watcher ends.
        case stop
    }

    public enum WaitReason: Sendable, Equatable {
        case backoff(attempt: Int)
        /// The server said when (429 Retry-After).
        case retryAfter(Duration, attempt: Int)
        /// 403: retried after a long pause; other resources go on.
        case forbidden
    }

    /// What to do with the stream after a frame.
    public enum FrameOutcome: Sendable, Equatable {
        case keepReading
        case stopReading(Action)
    }

    /// What emission leaves out. Left-out changes still advance the resourceVersion and the
    /// known objects; they are emitted as progress instead.
    public struct EmissionFilter: Sendable {
        public var changeTypes: Set<ChangeType> = Set(ChangeType.allCases)
        /// Leave out modifications that did not move `metadata.generation` (status or metadata only).
        public var specChangesOnly = false
        /// Which objects the bridge follows at all (namespace filters); others do not even enter the known objects.
        public var accepts: @Sendable (ObjectMeta) -> Bool = { _ in true }

        public init() {}
    }

    enum Resume: Sendable, Equatable {
        case relist
        case watch
    }

    /// A relist in progress: the uids seen so far, and the known objects by name, to notice a
    /// deleted-and-recreated object (same name, new uid).
    struct Relist: Sendable {
        var seen: Set<String> = []
        var uidByName: [String: String] = [:]
    }

    enum State: Sendable {
        case idle
        case listing(Relist, resourceVersion: String?)
        case streamingInitialEvents(Relist)
        case watching
        case waiting(then: Resume)
        case stopped
    }

    public let scope: WatchScope
    public var resource: GroupVersionResource { scope.resource }
    public private(set) var known: KnownObjects
    /// The newest resourceVersion received; opaque, only ever compared for equality.
    public private(set) var resourceVersion: String?
    public private(set) var streamingListsSupported: Bool
    var state: State = .idle
    var failures = 0
    let filter: EmissionFilter

    public init(scope: WatchScope, known: KnownObjects = KnownObjects(), useStreamingLists: Bool = true,
                filter: EmissionFilter = EmissionFilter()) {
        self.scope = scope
        self.known = known
        self.streamingListsSupported = useStreamingLists
        self.filter = filter
    }

    public init(resource: GroupVersionResource, known: KnownObjects = KnownObjects(), useStreamingLists: Bool = true,
                filter: EmissionFilter = EmissionFilter()) {
        self.init(scope: WatchScope(resource), known: known, useStreamingLists: useStreamingLists, filter: filter)
    }

    /// The first step: watch straight from a stored resourceVersion, or list first.
    public mutating func start(resumeFrom resourceVersion: String?) -> Action {
        if let resourceVersion, !resourceVersion.isEmpty {
            self.resourceVersion = resourceVersion
            state = .watching
            return .watch(resourceVersion: resourceVersion)
        }
        return beginRelist()
    }

    mutating func beginRelist() -> Action {
        var relist = Relist()
        for (uid, entry) in known.entries {
            relist.uidByName[Self.nameKey(entry.namespace, entry.name)] = uid
        }
        if streamingListsSupported {
            state = .streamingInitialEvents(relist)
            return .streamingList
        }
        state = .listing(relist, resourceVersion: nil)
        return .list(continueToken: nil)
    }

    static func nameKey(_ namespace: String?, _ name: String) -> String {
        "\(namespace ?? "")/\(name)"
    }

    // MARK: Lists

    /// A list page arrived: its objects are compared with the known ones.
    public mutating func pageReceived(_ page: ObjectList) -> ([ResourceEvent], Action) {
        guard case .listing(_, let firstVersion) = state else {
            preconditionFailure("a list page arrived in state \(state)")
        }
        var relist = takeRelist()
        var events: [ResourceEvent] = []
        for item in page.items where filter.accepts(item.metadata) {
            sync(item, relist: &relist, into: &events)
        }
        let listVersion = firstVersion ?? page.resourceVersion
        if let token = page.continueToken {
            state = .listing(relist, resourceVersion: listVersion)
            return (events, .list(continueToken: token))
        }
        finishRelist(relist, at: listVersion, into: &events)
        return (events, .watch(resourceVersion: listVersion))
    }

    /// One object of a list (or of a streaming list's initial events).
    mutating func sync(_ object: KubeObject, relist: inout Relist, into events: inout [ResourceEvent]) {
        let meta = object.metadata
        relist.seen.insert(meta.uid)
        if known[meta.uid] == nil, let previous = relist.uidByName[Self.nameKey(meta.namespace, meta.name)], previous != meta.uid {
            // Deleted and created again under the same name while nobody watched: two objects.
            emitDeletion(uid: previous, into: &events)
        }
        if let entry = known[meta.uid], entry.delivered, entry.resourceVersion == meta.resourceVersion {
            return
        }
        emit(Change(type: .synced, scope: scope, object: object), into: &events)
    }

    /// The list is complete: what the known objects have and the list had not is gone.
    mutating func finishRelist(_ relist: Relist, at listVersion: String, into events: inout [ResourceEvent]) {
        let vanished = known.entries.filter { !relist.seen.contains($0.key) }
            .sorted { ($0.value.namespace ?? "", $0.value.name) < ($1.value.namespace ?? "", $1.value.name) }
        for (uid, _) in vanished {
            emitDeletion(uid: uid, into: &events)
        }
        resourceVersion = listVersion
        events.append(.progress(scope, resourceVersion: listVersion))
        state = .watching
        failures = 0
    }

    mutating func emitDeletion(uid: String, into events: inout [ResourceEvent]) {
        guard let tombstone = known.tombstone(uid: uid) else { return }
        emit(Change(type: .deleted, scope: scope, object: tombstone, finalStateUnknown: true), into: &events)
    }

    /// Records a change and emits it, or emits progress when the filters leave it out.
    mutating func emit(_ change: Change, into events: inout [ResourceEvent]) {
        var change = change
        let previous = known[change.metadata.uid]
        known.apply(change)
        var wanted = filter.changeTypes.contains(change.type)
        if filter.specChangesOnly, change.type == .modified || change.type == .synced,
           let previous, previous.delivered, previous.generation == change.metadata.generation {
            wanted = false
        }
        guard wanted else {
            events.append(.progress(scope, resourceVersion: change.metadata.resourceVersion))
            return
        }
        if change.type != .deleted, !(previous?.stored ?? false) {
            change.unrecorded = true
            known.markStored(uid: change.metadata.uid)
        }
        events.append(.change(change))
    }

    // MARK: Watches

    /// A watch frame arrived.
    public mutating func frameReceived(_ frame: WatchFrame) -> ([ResourceEvent], FrameOutcome) {
        var events: [ResourceEvent] = []
        // The relist is moved out of the state before it is changed: while the state still held it
        // (a `switch state` keeps its subject alive), every insert would copy the whole seen set.
        if case .streamingInitialEvents = state {
            var relist = takeRelist()
            return streamingFrame(frame, relist: &relist)
        }
        switch state {
        case .watching:
            switch frame {
            case .added(let object): watched(.added, object, into: &events)
            case .modified(let object): watched(.modified, object, into: &events)
            case .deleted(let object): watched(.deleted, object, into: &events)
            case .bookmark(let version, _):
                resourceVersion = version
                events.append(.progress(scope, resourceVersion: version))
            case .error(let status):
                let error = KubeAPIError(code: .apiStatus, httpStatus: status.code, status: status,
                                         message: status.message ?? "watch error", request: "watch \(resource)")
                return ([], .stopReading(failed(error)))
            }
            failures = 0
            return (events, .keepReading)
        default:
            preconditionFailure("a watch frame arrived in state \(state)")
        }
    }

    /// Moves the relist out of the state, leaving `.idle`.
    private mutating func takeRelist() -> Relist {
        let relist: Relist
        switch state {
        case .streamingInitialEvents(let r): relist = r
        case .listing(let r, _): relist = r
        default: preconditionFailure("no relist in state \(state)")
        }
        state = .idle
        return relist
    }

    private mutating func streamingFrame(_ frame: WatchFrame, relist: inout Relist) -> ([ResourceEvent], FrameOutcome) {
        var events: [ResourceEvent] = []
        switch frame {
        case .added(let object):
            if filter.accepts(object.metadata) { sync(object, relist: &relist, into: &events) }
            state = .streamingInitialEvents(relist)
        case .bookmark(let version, let initialEventsEnd):
            if initialEventsEnd {
                finishRelist(relist, at: version, into: &events)
            } else {
                state = .streamingInitialEvents(relist)
            }
        case .modified, .deleted:
            // Only additions come before the initial-events-end bookmark; anything else means
            // the server does not stream lists as expected.
            streamingListsSupported = false
            return ([], .stopReading(beginRelist()))
        case .error(let status):
            state = .streamingInitialEvents(relist)
            return ([], .stopReading(failed(KubeAPIError(
                code: .apiStatus, httpStatus: status.code, status: status, message: status.message ?? "watch error", request: "watch \(resource)"))))
        }
        return (events, .keepReading)
    }

    mutating func watched(_ type: ChangeType, _ object: KubeObject, into events: inout [ResourceEvent]) {
        resourceVersion = object.metadata.resourceVersion
        guard filter.accepts(object.metadata) else {
            events.append(.progress(scope, resourceVersion: object.metadata.resourceVersion))
            return
        }
        emit(Change(type: type, scope: scope, object: object), into: &events)
    }

    /// The server ended the stream cleanly (its timeout): watch again from where it ended.
    public mutating func streamEnded() -> Action {
        switch state {
        case .streamingInitialEvents:
            // The initial-events-end bookmark never came: a server that ignores sendInitialEvents.
            streamingListsSupported = false
            return beginRelist()
        case .watching:
            guard let resourceVersion else { return beginRelist() }
            return .watch(resourceVersion: resourceVersion)
        default:
            preconditionFailure("a stream ended in state \(state)")
        }
    }

    // MARK: Failures

    /// A request or a stream failed.
    public mutating func failed(_ error: KubeAPIError) -> Action {
        let resume: Resume
        switch state {
        case .watching where resourceVersion != nil: resume = .watch
        default: resume = .relist
        }
        if case .streamingInitialEvents = state, error.httpStatus == 422 || error.httpStatus == 400 {
            // A server without streaming lists refuses sendInitialEvents: list in pages instead.
            streamingListsSupported = false
            return beginRelist()
        }
        if error.isGone {
            return beginRelist()
        }
        if error.isNotFound {
            state = .stopped
            return .stop
        }
        state = .waiting(then: resume)
        if error.isForbidden {
            return .wait(.forbidden)
        }
        failures += 1
        if error.isTooManyRequests, let retryAfter = error.retryAfter {
            return .wait(.retryAfter(retryAfter, attempt: failures))
        }
        return .wait(.backoff(attempt: failures))
    }

    /// The resource stopped being served: its CRD was deleted, and with it every object of it.
    /// Objects whose deletions the watch did not deliver (the CRD went between a list and its
    /// watch) are emitted as deleted, so that nothing stays alive downstream.
    public mutating func resourceRemoved() -> [ResourceEvent] {
        var events: [ResourceEvent] = []
        let remaining = known.entries.sorted { ($0.value.namespace ?? "", $0.value.name) < ($1.value.namespace ?? "", $1.value.name) }
        for (uid, _) in remaining {
            emitDeletion(uid: uid, into: &events)
        }
        return events
    }

    /// The wait is over.
    public mutating func waited() -> Action {
        guard case .waiting(let resume) = state else {
            preconditionFailure("waited in state \(state)")
        }
        switch resume {
        case .watch:
            state = .watching
            return .watch(resourceVersion: resourceVersion!)
        case .relist:
            return beginRelist()
        }
    }
}
