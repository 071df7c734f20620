import KubeTestServer

/// Holds one answer of the test server against the transcript of the same request.
public enum TranscriptCheck {
    /// Headers whose values are the same on every run; the others (Audit-Id, Date, flow-schema
    /// uids, Etag, Content-Length) only have to be present, in the same place.
    static let stableHeaders: Set<String> = ["cache-control", "content-type", "vary", "x-content-type-options", "transfer-encoding"]

    /// Over HTTP/2 (`http2`) the names are those of the recording in lower case, without the
    /// connection's own (`Transfer-Encoding`, `Connection`), as the recordings' README says.
    public static func head(_ transcript: Transcript, status: Int, headers: [(String, String)], http2: Bool = false) -> [String] {
        var problems: [String] = []
        if status != transcript.statusCode {
            problems.append("status \(status), expected \(transcript.statusCode)")
        }
        let recordedNames = transcript.responseHeaders.map(\.0)
        let expectedNames = http2
            ? recordedNames.map { $0.lowercased() }.filter { $0 != "transfer-encoding" && $0 != "connection" } : recordedNames
        // AsyncHTTPClient's HTTP/2 codec adds `transfer-encoding: chunked` to a response without a
        // length for its HTTP/1 side; it is not on the wire.
        let actualNames = http2 ? headers.map(\.0).filter { $0 != "transfer-encoding" } : headers.map(\.0)
        if expectedNames != actualNames {
            problems.append("headers \(actualNames), expected \(expectedNames)")
        }
        for (name, value) in transcript.responseHeaders where stableHeaders.contains(name.lowercased()) {
            let actual = headers.first { $0.0.lowercased() == name.lowercased() }?.1
            if actual != value { problems.append("header \(name): \(actual ?? "missing"), expected \(value)") }
        }
        return problems
    }

    public static func body(_ transcript: Transcript, text: String, shape: JSONShape? = nil) -> [String] {
        let shape = shape ?? JSONShape(subset: transcript.isTrimmed)
        let contentType = transcript.responseHeader("content-type") ?? ""
        guard contentType.hasPrefix("application/json") else {
            return text == transcript.body ? [] : ["body \(text.debugDescription), expected \(transcript.body.debugDescription)"]
        }
        var problems: [String] = []
        if text.hasSuffix("\n") != transcript.body.hasSuffix("\n") {
            problems.append("trailing newline \(text.hasSuffix("\n")), expected \(transcript.body.hasSuffix("\n"))")
        }
        if text.hasPrefix("{\n") != transcript.body.hasPrefix("{\n") {
            problems.append("pretty-printing differs")
        }
        do {
            let expected = try JSON(parsing: transcript.body)
            let actual = try JSON(parsing: text)
            problems += shape.differences(expected: expected, actual: actual)
        } catch {
            problems.append("body is not JSON: \(error): \(text.prefix(200))")
        }
        return problems
    }

    /// Watch streams: the same number of lines, each the same shape.
    public static func lines(_ transcript: Transcript, lines: [String], shape: JSONShape = JSONShape()) -> [String] {
        let expected = transcript.lines
        var problems: [String] = []
        if expected.count != lines.count {
            problems.append("\(lines.count) lines, expected \(expected.count): \(lines.map { $0.prefix(100) })")
        }
        for (index, pair) in zip(expected, lines).enumerated() {
            do {
                let differences = shape.differences(expected: try JSON(parsing: pair.0), actual: try JSON(parsing: pair.1))
                problems += differences.map { "line \(index + 1): \($0)" }
            } catch {
                problems.append("line \(index + 1) is not JSON: \(pair.1.prefix(200))")
            }
        }
        return problems
    }
}
