import Foundation
import KubeAPI
import Testing
import TestSupport

/// The memory measurements run in their own process, with the test API server in another, so
/// that nothing else in the test process blurs them.
@Suite("Memory under a slow consumer")
struct SlowConsumerTests {
    @Test("done-when: 100,000 changes pending upstream of a stopped consumer leave memory flat, and all arrive")
    func slowConsumer() async throws {
        let bench = URL(fileURLWithPath: KubeBridgeBinary.path).deletingLastPathComponent().appendingPathComponent("kubebridge-bench").path
        let pending = 100_000
        // The bench's own limits are set past these, so that the numbers are judged here.
        let result = try await ProcessRunner.runBinary(bench, ["slow-consumer", "--pending", String(pending), "--json",
                                                               "--max-pending-growth-mib", "100000", "--max-growth-mib", "100000"], timeout: 600)
        let output = String(decoding: result.stdout, as: UTF8.self)
        #expect(result.status == 0, "\(output)\(String(decoding: result.stderr, as: UTF8.self))")
        let line = try #require(output.split(separator: "\n").last { $0.hasPrefix("{") }, "\(output)")
        let measured = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Int])
        let mib = 1_048_576
        let baseline = try #require(measured["baseline"])
        let pendingGrowth = max(measured["whilePending"] ?? .max, measured["stillPending"] ?? .max) - baseline
        #expect(measured["delivered"] == pending, "\(output)")
        #expect(pendingGrowth <= 16 * mib, "memory grew by \(pendingGrowth / mib) MiB while \(pending) changes were pending: something piles them up")
        #expect((measured["peak"] ?? .max) - baseline <= 96 * mib, "memory peaked \(((measured["peak"] ?? 0) - baseline) / mib) MiB above the baseline while draining")
    }
}
