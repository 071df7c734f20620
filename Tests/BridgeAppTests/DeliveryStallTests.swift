@testable import BridgeApp
import Testing

@Suite("A sink that confirms nothing while events wait")
struct DeliveryStallTests {
    @Test("stalled once nothing is confirmed for the limit while events wait; confirming, or nothing waiting, starts over")
    func stall() {
        let start = ContinuousClock.now
        var stall = DeliveryStall(limit: .seconds(120))
        #expect(stall.observe(delivered: 0, waiting: 5, now: start) == nil)
        #expect(stall.observe(delivered: 0, waiting: 9, now: start + .seconds(119)) == nil)
        #expect(stall.observe(delivered: 0, waiting: 9, now: start + .seconds(121)) == .seconds(121))
        // One confirmation starts the count again.
        #expect(stall.observe(delivered: 1, waiting: 9, now: start + .seconds(122)) == nil)
        #expect(stall.observe(delivered: 1, waiting: 9, now: start + .seconds(200)) == nil)
        #expect(stall.observe(delivered: 1, waiting: 9, now: start + .seconds(242)) == .seconds(120))
        // Nothing waiting is not a stall, however long nothing is confirmed.
        #expect(stall.observe(delivered: 1, waiting: 0, now: start + .seconds(300)) == nil)
        #expect(stall.observe(delivered: 1, waiting: 3, now: start + .seconds(1000)) == nil)
        #expect(stall.observe(delivered: 1, waiting: 3, now: start + .seconds(1119)) == nil)
        #expect(stall.observe(delivered: 1, waiting: 3, now: start + .seconds(1120)) == .seconds(120))
    }
}
