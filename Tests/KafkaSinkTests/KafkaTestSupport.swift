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
        try SampleEvents.make(scope: scope, kind: "Deployment", namespace: "shop", names: (0..<objects).map { "web-\($0)" }, changes: changes,
                              tracker: &tracker, payload: payload, firstVersion: firstVersion)
    }
}
