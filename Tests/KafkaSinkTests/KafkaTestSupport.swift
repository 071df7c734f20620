import BridgeCore
import Foundation
import KafkaSink
import KubeAPI
import KubeModel
import NIOCore
import Testing
import TestSupport

enum KafkaTestSupport {
    static let scope = WatchScope(GroupVersionResource("apps/v1/deployments")!)

    /// Events of `objects` objects with `changes` changes each, interleaved, registered with `ledger`.
    static func events(objects: Int, changes: Int, ledger: inout DeliveryLedger, payload: Int = 200, firstVersion: Int = 100) throws -> [OutboundEvent] {
        try SampleEvents.make(scope: scope, kind: "Deployment", namespace: "shop", names: (0..<objects).map { "web-\($0)" }, changes: changes,
                              ledger: &ledger, payload: payload, firstVersion: firstVersion)
    }
}
