/// `text` with each of the ASCII characters in `replacements` written as its replacement; the text
/// itself, without a copy, when it has none of them (the common case, checked on the UTF-8 bytes:
/// this runs for every member name of every object compared).
public func escaping(_ text: String, _ replacements: KeyValuePairs<Unicode.Scalar, String>) -> String {
    guard text.utf8.contains(where: { byte in replacements.contains { $0.key.value == UInt32(byte) } }) else { return text }
    var out = ""
    out.reserveCapacity(text.utf8.count + 8)
    for scalar in text.unicodeScalars {
        if let replacement = replacements.first(where: { $0.key == scalar })?.value { out += replacement } else { out.unicodeScalars.append(scalar) }
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
