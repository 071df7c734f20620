/// `text` with each character found in `replacements` written as its replacement; the text itself
/// when it has none of them.
public func escaping(_ text: String, _ replacements: [Character: String]) -> String {
    guard text.contains(where: { replacements[$0] != nil }) else { return text }
    var out = ""
    out.reserveCapacity(text.utf8.count + 8)
    for character in text {
        if let replacement = replacements[character] { out += replacement } else { out.append(character) }
    }
    return out
}

/// SplitMix64: random numbers repeatable from a seed (backoff jitter, generated test cases).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
