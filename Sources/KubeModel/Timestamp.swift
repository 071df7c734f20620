import Foundation

/// RFC 3339 times in UTC, as Kubernetes writes them: `Time` with whole seconds, `MicroTime` with
/// six digits, and CloudEvents' `time` here with three.
public enum Timestamp {
    public static func rfc3339(_ date: Date, fractionDigits: Int) -> String {
        // Digits by hand, not String(format:): every event's `time` is one of these.
        let digits = [0, 1, 2, 3, 6].contains(fractionDigits) ? fractionDigits : 3
        var scale: Int64 = 1
        for _ in 0..<digits { scale *= 10 }
        let units = Int64((date.timeIntervalSince1970 * Double(scale)).rounded(.down))
        var seconds = time_t(units / scale)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var text: [UInt8] = []
        text.reserveCapacity(32)
        func append(_ value: Int64, width: Int) {
            var divisor: Int64 = 1
            for _ in 1..<width { divisor *= 10 }
            while divisor > 0 {
                text.append(UInt8(ascii: "0") + UInt8(value / divisor % 10))
                divisor /= 10
            }
        }
        append(Int64(parts.tm_year) + 1900, width: 4)
        text.append(UInt8(ascii: "-"))
        append(Int64(parts.tm_mon) + 1, width: 2)
        text.append(UInt8(ascii: "-"))
        append(Int64(parts.tm_mday), width: 2)
        text.append(UInt8(ascii: "T"))
        append(Int64(parts.tm_hour), width: 2)
        text.append(UInt8(ascii: ":"))
        append(Int64(parts.tm_min), width: 2)
        text.append(UInt8(ascii: ":"))
        append(Int64(parts.tm_sec), width: 2)
        if digits > 0 {
            text.append(UInt8(ascii: "."))
            append(units % scale, width: digits)
        }
        text.append(UInt8(ascii: "Z"))
        return String(decoding: text, as: UTF8.self)
    }
}
