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
        let result = try await ProcessRunner.runBinary(bench, ["slow-consumer", "--pending", "100000"], timeout: 600)
        let output = String(decoding: result.stdout, as: UTF8.self)
        #expect(result.status == 0, "\(output)\(String(decoding: result.stderr, as: UTF8.self))")
        #expect(output.contains("delivered 100000 changes"))
        #expect(output.contains("PASS"))
    }
}
