/// `%XX` escaping (uppercase hex) of the bytes a protocol does not allow, as NATS subject tokens
/// and CloudEvents HTTP headers need it.
public enum PercentEncoding {
    /// `text` with every UTF-8 byte that `keep` refuses written as `%XX`; `keep` must refuse `%`,
    /// so that the result can be decoded.
    public static func encode(_ text: String, keeping keep: (UInt8) -> Bool) -> String {
        if text.utf8.allSatisfy(keep) { return text }
        var out = ""
        out.reserveCapacity(text.utf8.count + 8)
        for byte in text.utf8 {
            if keep(byte) {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out += "%" + hex(byte, uppercase: true)
            }
        }
        return out
    }

    /// Two hex digits.
    public static func hex(_ byte: UInt8, uppercase: Bool = false) -> String {
        let digits = uppercase ? Array("0123456789ABCDEF".utf8) : Array("0123456789abcdef".utf8)
        return String(decoding: [digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]], as: UTF8.self)
    }
}
