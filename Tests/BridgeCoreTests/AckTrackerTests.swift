import BridgeCore
import KubeModel
import NIOCore
import Testing

@Suite("AckTracker: the ordered watermark")
struct AckTrackerTests {
    static let scope = WatchScope(GroupVersionResource("core/v1/configmaps")!)

    static func change(_ name: String, rv: String, type: ChangeType = .modified) -> ResourceEvent {
        var meta = ObjectMeta()
        meta.name = name
        meta.uid = "uid-\(name)"
        meta.resourceVersion = rv
        meta.kind = "ConfigMap"
        meta.apiVersion = "v1"
        return .change(Change(type: type, scope: scope, object: KubeObject(metadata: meta, bytes: ByteBuffer())))
    }

    @Test("the watermark moves only past changes every sink acknowledged, in arrival order")
    func orderedWatermark() throws {
        var tracker = AckTracker(sinkCount: 2)
        let registered = ["a", "b", "c"].enumerated().map { tracker.register(Self.change($0.element, rv: "\($0.offset + 1)")).token }
        let (a, b, c) = (try #require(registered[0]), try #require(registered[1]), try #require(registered[2]))
        // Out of order, and one sink at a time.
        let early = [tracker.acknowledge(b, sink: 0), tracker.acknowledge(b, sink: 1), tracker.acknowledge(c, sink: 1)]
        #expect(early.allSatisfy { $0 == nil })
        #expect(tracker.watermark(of: Self.scope) == nil, "a is not acknowledged: nothing may be checkpointed")
        let partial = tracker.acknowledge(a, sink: 1)
        #expect(partial == nil)
        let advanceResult = tracker.acknowledge(a, sink: 0)
        let advance = try #require(advanceResult)
        #expect(advance.resourceVersion == "2")
        #expect(advance.confirmed.map(\.name) == ["a", "b"])
        #expect(tracker.unconfirmed(in: Self.scope) == 1)
        let last = tracker.acknowledge(c, sink: 0)
        #expect(last?.resourceVersion == "3")
        #expect(tracker.watermark(of: Self.scope) == "3")
    }

    @Test("progress enters acknowledged: a quiet resource's watermark moves with bookmarks, but never past a pending change")
    func progress() throws {
        var tracker = AckTracker(sinkCount: 1)
        let first = tracker.register(.progress(Self.scope, resourceVersion: "10")).advance
        #expect(first?.resourceVersion == "10")
        let tokenResult = tracker.register(Self.change("a", rv: "11")).token
        let token = try #require(tokenResult)
        let held = tracker.register(.progress(Self.scope, resourceVersion: "15")).advance
        #expect(held == nil)
        #expect(tracker.watermark(of: Self.scope) == "10")
        let advanceResult = tracker.acknowledge(token, sink: 0)
        let advance = try #require(advanceResult)
        #expect(advance.resourceVersion == "15")
        #expect(advance.confirmed.map(\.name) == ["a"])
    }

    @Test("a list's states do not move the watermark, since a list is not in version order: a crash mid-list resumes from before it (or lists again), never from one object's version")
    func listsKeepTheWatermark() throws {
        var tracker = AckTracker(sinkCount: 1)
        // A first list: objects at versions 78, 30, 55, then the list's own version.
        for (name, rv) in [("a", "78"), ("b", "30"), ("c", "55")] {
            let token = try #require(tracker.register(Self.change(name, rv: rv, type: .synced)).token)
            let acknowledged = tracker.acknowledge(token, sink: 0)
            let advance = try #require(acknowledged)
            #expect(advance.resourceVersion == "", "no watch position yet: a restart lists again")
            #expect(advance.confirmed.map(\.name) == [name], "the objects are confirmed all the same")
        }
        #expect(tracker.watermark(of: Self.scope) == nil)
        let firstListEnd = tracker.register(.progress(Self.scope, resourceVersion: "100")).advance
        #expect(firstListEnd?.resourceVersion == "100")
        // Watching from 100; then a 410 and a relist: its states keep the watermark at the last watch event.
        let watched = try #require(tracker.register(Self.change("a", rv: "120")).token)
        let afterWatch = tracker.acknowledge(watched, sink: 0)
        #expect(afterWatch?.resourceVersion == "120")
        let relisted = try #require(tracker.register(Self.change("b", rv: "90", type: .synced)).token)
        let afterRelist = tracker.acknowledge(relisted, sink: 0)
        #expect(afterRelist?.resourceVersion == "120")
        let listEnd = tracker.register(.progress(Self.scope, resourceVersion: "200")).advance
        #expect(listEnd?.resourceVersion == "200")
    }

    @Test("scopes are independent")
    func scopes() throws {
        var tracker = AckTracker(sinkCount: 1)
        let other = WatchScope(GroupVersionResource("apps/v1/deployments")!)
        let blockedResult = tracker.register(Self.change("a", rv: "1")).token
        let blocked = try #require(blockedResult)
        let otherAdvance = tracker.register(.progress(other, resourceVersion: "7")).advance
        #expect(otherAdvance?.resourceVersion == "7")
        #expect(tracker.watermark(of: Self.scope) == nil)
        _ = tracker.acknowledge(blocked, sink: 0)
        #expect(tracker.watermark(of: Self.scope) == "1")
    }

    @Test("the known objects follow the confirmed changes")
    func knownObjects() throws {
        var tracker = AckTracker(sinkCount: 1)
        var known = KnownObjects()
        for event in [Self.change("a", rv: "1", type: .added), Self.change("b", rv: "2", type: .added), Self.change("a", rv: "3", type: .deleted)] {
            let tokenResult = tracker.register(event).token
            let token = try #require(tokenResult)
            for change in tracker.acknowledge(token, sink: 0)?.confirmed ?? [] { known.apply(change) }
        }
        #expect(known.entries.keys.sorted() == ["uid-b"])
        #expect(known.kind == "ConfigMap")
    }
}
