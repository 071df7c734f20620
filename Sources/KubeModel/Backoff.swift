/// Capped, jittered exponential backoff.
public struct Backoff: Sendable {
    public var initial: Duration = .milliseconds(500)
    public var maximum: Duration = .seconds(30)
    public var multiplier = 2.0

    public init(initial: Duration = .milliseconds(500), maximum: Duration = .seconds(30), multiplier: Double = 2.0) {
        self.initial = initial
        self.maximum = maximum
        self.multiplier = multiplier
    }

    /// The pause before retry number `attempt` (1-based): exponential, capped, then scaled by a
    /// random factor in [0.5, 1] so that many watchers failing together do not retry together.
    public func delay<R: RandomNumberGenerator>(attempt: Int, using random: inout R) -> Duration {
        let exponent = Double(max(0, attempt - 1))
        let base = min(initial.seconds * pow2(multiplier, exponent), maximum.seconds)
        return .seconds(base * Double.random(in: 0.5...1.0, using: &random))
    }

    private func pow2(_ base: Double, _ exponent: Double) -> Double {
        var result = 1.0
        var remaining = Int(exponent)
        while remaining > 0 { result *= base; remaining -= 1 }
        return result
    }
}

extension Duration {
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
