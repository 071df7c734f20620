extension Duration {
    /// A duration as a log line or message says it: `250 ms`, `1.5 s`, `60 s`, `2.5 min`; Swift's
    /// own description carries every digit of a jittered backoff.
    public var spoken: String {
        let (seconds, attoseconds) = components
        let total = Double(seconds) + Double(attoseconds) / 1e18
        func rounded(_ value: Double) -> String {
            let tenths = (value * 10).rounded() / 10
            return tenths == tenths.rounded() ? String(Int(tenths)) : String(tenths)
        }
        if total < 1 { return "\(Int((total * 1000).rounded())) ms" }
        if total < 120 { return "\(rounded(total)) s" }
        return "\(rounded(total / 60)) min"
    }
}
