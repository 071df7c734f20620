import BridgeCore
import Foundation
import KafkaSink
import KubeAPI
import NIOCore
import Testing
import TestSupport

enum KafkaTestSupport {
    static let scope = WatchScope(GroupVersionResource("apps/v1/deployments")!)

    /// Events of `objects` objects with `changes` changes each, interleaved, registered with `tracker`.
    static func events(objects: Int, changes: Int, tracker: inout AckTracker, payload: Int = 200, firstVersion: Int = 100) throws -> [OutboundEvent] {
        var events: [OutboundEvent] = []
        var version = firstVersion
        for change in 0..<changes {
            for object in 0..<objects {
                version += 1
                var meta = ObjectMeta()
                meta.apiVersion = "apps/v1"
                meta.kind = "Deployment"
                meta.name = "web-\(object)"
                meta.namespace = "shop"
                meta.uid = "uid-\(object)"
                meta.resourceVersion = "\(version)"
                let json = #"{"kind":"Deployment","apiVersion":"apps/v1","metadata":{"name":"web-\#(object)","namespace":"shop","uid":"uid-\#(object)","resourceVersion":"\#(version)"},"spec":{"replicas":\#(change),"pad":"\#(String(repeating: "x", count: payload))"}}"#
                let type: ChangeType = change == 0 ? .added : .modified
                let changeValue = Change(type: type, scope: scope, object: KubeObject(metadata: meta, bytes: ByteBuffer(string: json)))
                let token = try #require(tracker.register(.change(changeValue)).token)
                events.append(OutboundEvent(envelope: try EnvelopeBuilder().envelope(for: changeValue, receivedAt: Date()), token: token,
                                            resource: changeValue.resource, namespace: "shop"))
            }
        }
        return events
    }
}
