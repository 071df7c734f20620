import Foundation
import Testing
@testable import BridgeApp

@Suite("Structured log lines")
struct LogFormatTests {
    static let fields = [("level", "warning"), ("msg", "delivery failed: HTTP 503 \"busy\""), ("gvr", "apps/v1/deployments"), ("sink", "")]

    @Test("logfmt: bare values where they are safe, quoted (JSON escaping) where not")
    func logfmt() {
        #expect(StructuredLogHandler.logfmt(Self.fields)
            == #"level=warning msg="delivery failed: HTTP 503 \"busy\"" gvr=apps/v1/deployments sink="""#)
        #expect(StructuredLogHandler.logfmt([("msg", "a=b\nc")]) == #"msg="a=b\nc""#)
    }

    @Test("json: one object per line that a JSON parser reads back as written")
    func json() throws {
        let line = StructuredLogHandler.json(Self.fields + [("control", "\u{1}tab\t")])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String])
        #expect(object["msg"] == "delivery failed: HTTP 503 \"busy\"" && object["control"] == "\u{1}tab\t" && object["sink"] == "")
        #expect(!line.contains("\n"))
    }
}
