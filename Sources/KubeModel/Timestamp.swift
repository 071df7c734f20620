import Foundation

/// RFC 3339 times in UTC, as Kubernetes writes them: `Time` with whole seconds, `MicroTime` with
/// six digits, and CloudEvents' `time` here with three.
public enum Timestamp {
    public static func rfc3339(_ date: Date, fractionDigits: Int) -> String {
        let scale = [1, 10, 100, 1_000, 1_000_000][[0, 1, 2, 3, 6].firstIndex(of: fractionDigits) ?? 3]
        let units = Int64((date.timeIntervalSince1970 * Double(scale)).rounded(.down))
        var seconds = time_t(units / Int64(scale))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let whole = String(format: "%04d-%02d-%02dT%02d:%02d:%02d", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec)
        guard scale > 1 else { return whole + "Z" }
        return whole + String(format: ".%0\(fractionDigits)lldZ", units % Int64(scale))
    }
}
