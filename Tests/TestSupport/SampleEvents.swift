import BridgeCore
import Foundation
import KubeAPI
import KubeModel
import NIOCore

/// Events of made-up objects, registered with an `DeliveryLedger`, for sink tests.
public enum SampleEvents {
    /// `objects` objects with `changes` changes each, interleaved (each object's first change is
    /// `added`), with versions counting up from `firstVersion`. With `comparing`, each change after
    /// an object's first is compared with the one before (`changedpaths` and the merge patch).
    public static func make(scope: WatchScope, kind: String, namespace: String?, names: [String], changes: Int, ledger: inout DeliveryLedger,
                            payload: Int = 200, firstVersion: Int = 100, comparing: Bool = false) throws -> [OutboundEvent] {
        var events: [OutboundEvent] = []
        var options = EnvelopeOptions()
        (options.changedPaths, options.mergePatch) = (comparing, comparing)
        let builder = EnvelopeBuilder(options: options)
        var previous: [String: ByteBuffer] = [:]
        var version = firstVersion
        let apiVersion = scope.resource.group.isEmpty ? scope.resource.version : "\(scope.resource.group)/\(scope.resource.version)"
        for change in 0..<changes {
            for (index, name) in names.enumerated() {
                version += 1
                var meta = ObjectMeta()
                meta.apiVersion = apiVersion
                meta.kind = kind
                meta.name = name
                meta.namespace = namespace
                meta.uid = "uid-\(index)"
                meta.resourceVersion = "\(version)"
                let namespaceField = namespace.map { #","namespace":"\#($0)""# } ?? ""
                let json = #"{"kind":"\#(kind)","apiVersion":"\#(apiVersion)","metadata":{"name":"\#(name)"\#(namespaceField),"uid":"uid-\#(index)","resourceVersion":"\#(version)"},"spec":{"replicas":\#(change),"pad":"\#(String(repeating: "x", count: payload))"}}"#
                let changeValue = Change(type: change == 0 ? .added : .modified, scope: scope, object: KubeObject(metadata: meta, bytes: ByteBuffer(string: json)))
                guard let token = ledger.received(.change(changeValue), at: .zero).token else { throw TestFailure(message: "no token for a change") }
                let envelope = try builder.envelope(for: changeValue, receivedAt: Date(), previous: comparing ? previous[name] : nil)
                previous[name] = envelope.data
                events.append(OutboundEvent(envelope: envelope, token: token, resource: changeValue.resource, namespace: namespace))
            }
        }
        return events
    }
}
