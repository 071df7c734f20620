import BridgeCore
import Foundation
import KubeModel
import NIOCore
import Testing
import TestSupport

@Suite("JSON string literals")
struct JSONStringTests {
    @Test("quotes, backslashes and control characters are escaped, everything else goes through as UTF-8", arguments: [
        "", "plain", #"a "quoted" \ path/x"#, "line\nbreak\r\ttab", "\u{1}\u{1f}\u{0}", "é € 😀 \u{2028}", String(repeating: "x", count: 5000) + "\"",
    ])
    func roundTrip(_ text: String) throws {
        var buffer = ByteBuffer()
        buffer.writeJSONString(text)
        let written = String(buffer: buffer)
        let parsed = try JSONSerialization.jsonObject(with: Data(written.utf8), options: .fragmentsAllowed) as? String
        #expect(parsed == text)
        #expect(!written.utf8.dropFirst().dropLast().contains { $0 < 0x20 }, "no raw control character: \(written)")
    }

    @Test("the escapes are the short ones where JSON has them, \\u00XX otherwise")
    func escapes() {
        var buffer = ByteBuffer()
        buffer.writeJSONString("\"\\\n\r\t\u{1}\u{1b}é")
        #expect(String(buffer: buffer) == #""\"\\\n\r\t\u0001\u001bé""#)
    }
}

@Suite("Object rewriting by spans")
struct ObjectRewriterTests {
    static func rewrite(_ text: String, _ edits: ObjectRewriter.Edits) throws -> String {
        String(buffer: try ObjectRewriter.apply(edits, to: ByteBuffer(string: text)))
    }

    @Test("managedFields is cut wherever it stands in metadata, and the rest stays byte for byte", arguments: [
        (#"{"metadata":{"name":"a","managedFields":[{"x":1}],"uid":"u"},"data":{}}"#, #"{"metadata":{"name":"a","uid":"u"},"data":{}}"#),
        (#"{"metadata":{"name":"a","managedFields":[{"x":1}]},"data":{}}"#, #"{"metadata":{"name":"a"},"data":{}}"#),
        (#"{"metadata":{"managedFields":[]}}"#, #"{"metadata":{}}"#),
        (#"{"metadata":{ "managedFields" : [ 1 ] , "name" : "a" }}"#, #"{"metadata":{ "name" : "a" }}"#),
        (#"{"metadata":{"name":"a"}}"#, #"{"metadata":{"name":"a"}}"#),
        (#"{"spec":{"metadata":{"managedFields":[]}},"metadata":{"name":"a"}}"#, #"{"spec":{"metadata":{"managedFields":[]}},"metadata":{"name":"a"}}"#),
        (#"{"metadata":{"managedFields":[],"name":"a"},"spec":{"x":[1, "\"y"]} ,"status":{}}"#, #"{"metadata":{"name":"a"},"spec":{"x":[1, "\"y"]} ,"status":{}}"#),
    ])
    func managedFields(input: String, expected: String) throws {
        #expect(try Self.rewrite(input, .init(dropManagedFields: true)) == expected)
    }

    @Test("data and stringData values are replaced, their keys kept")
    func redaction() throws {
        let input = #"{"kind":"Secret","data":{"password":"c2VjcmV0","tls.crt":"Q0VSVA=="},"stringData":{"token":"a\"b"},"type":"Opaque"}"#
        let expected = #"{"kind":"Secret","data":{"password":"REDACTED","tls.crt":"REDACTED"},"stringData":{"token":"REDACTED"},"type":"Opaque"}"#
        #expect(try Self.rewrite(input, .init(redactDataWith: "REDACTED")) == expected)
        let withMetadata = #"{"metadata":{"name":"s","managedFields":[{"f":1}]},"data":{"password":"c2VjcmV0"}}"#
        #expect(try Self.rewrite(withMetadata, .init(dropManagedFields: true, redactDataWith: "REDACTED")) == #"{"metadata":{"name":"s"},"data":{"password":"REDACTED"}}"#,
                "both edits: the data after metadata is still redacted")
    }

    @Test("the recorded ConfigMap without its managedFields is still the same object")
    func recordedObject() throws {
        let text = try Transcript.load(18).body.trimmingCharacters(in: .newlines)
        let rewritten = try Self.rewrite(text, .init(dropManagedFields: true))
        let original = try #require(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        let result = try #require(JSONSerialization.jsonObject(with: Data(rewritten.utf8)) as? [String: Any])
        var metadata = try #require(original["metadata"] as? [String: Any])
        metadata["managedFields"] = nil
        #expect(NSDictionary(dictionary: result["metadata"] as? [String: Any] ?? [:]).isEqual(to: metadata))
        #expect(NSDictionary(dictionary: result["data"] as? [String: Any] ?? [:]).isEqual(to: original["data"] as? [String: Any] ?? [:]))
    }

    @Test("malformed objects are an error, not a silent pass")
    func malformed() {
        #expect(throws: (any Error).self) { try Self.rewrite(#"{"metadata":{"managedFields":[}"#, .init(dropManagedFields: true)) }
    }
}

@Suite("CloudEvents envelopes")
struct EnvelopeTests {
    static func change(_ type: ChangeType, kind: String = "ConfigMap", resource: String = "core/v1/configmaps", rv: String = "42",
                       json: String = #"{"kind":"ConfigMap","metadata":{"name":"web","managedFields":[{}]},"data":{"k":"v"}}"#,
                       finalStateUnknown: Bool = false) -> Change {
        var meta = ObjectMeta()
        meta.apiVersion = "v1"
        meta.kind = kind
        meta.name = "web"
        meta.namespace = "shop"
        meta.uid = "0de05f38-605b-4e4b-acb9-f6a59626d3bd"
        meta.resourceVersion = rv
        return Change(type: type, resource: GroupVersionResource(resource)!, object: KubeObject(metadata: meta, bytes: ByteBuffer(string: json)),
                      finalStateUnknown: finalStateUnknown)
    }

    @Test("attributes: source, type, subject, time and the extensions")
    func attributes() throws {
        var options = EnvelopeOptions()
        options.cluster = "prod-eu"
        let envelope = try EnvelopeBuilder(options: options).envelope(for: Self.change(.modified), receivedAt: Date(timeIntervalSince1970: 1_795_000_000.123))
        let attributes = Dictionary(uniqueKeysWithValues: envelope.attributes.map { ($0.name, $0.value) })
        #expect(attributes["specversion"] == "1.0")
        #expect(attributes["id"] == "0de05f38-605b-4e4b-acb9-f6a59626d3bd/42")
        #expect(attributes["source"] == "/kubebridge/prod-eu/api/v1/namespaces/shop/configmaps")
        #expect(attributes["type"] == "io.kubebridge.core.v1.configmaps.modified")
        #expect(attributes["subject"] == "namespaces/shop/configmaps/web")
        #expect(attributes["time"] == "2026-11-18T11:06:40.123Z")
        #expect(attributes["datacontenttype"] == "application/json")
        #expect(attributes["partitionkey"] == attributes["uid"])
        #expect(attributes["changetype"] == "modified")
        #expect(attributes["resourceversion"] == "42")
        for name in attributes.keys {
            #expect(name.count <= 20 && name.allSatisfy { $0.isLowercase || $0.isNumber }, "\(name) is not a valid CloudEvents attribute name")
        }
        #expect(String(buffer: envelope.data) == #"{"kind":"ConfigMap","metadata":{"name":"web"},"data":{"k":"v"}}"#)
    }

    @Test("the same state has the same id however it was learned; a deletion has its own")
    func deterministicIDs() throws {
        let builder = EnvelopeBuilder()
        let modified = try builder.envelope(for: Self.change(.modified), receivedAt: Date()).id
        let synced = try builder.envelope(for: Self.change(.synced), receivedAt: Date(timeIntervalSinceNow: 60)).id
        let deleted = try builder.envelope(for: Self.change(.deleted, finalStateUnknown: true), receivedAt: Date()).id
        #expect(modified == synced)
        #expect(deleted != modified)
        #expect(try builder.envelope(for: Self.change(.modified, rv: "43"), receivedAt: Date()).id != modified)
    }

    @Test("Secrets are redacted unless revealed by name; other kinds are not touched")
    func secrets() throws {
        let secret = Self.change(.added, kind: "Secret", resource: "core/v1/secrets", json: #"{"kind":"Secret","data":{"password":"c2VjcmV0"}}"#)
        #expect(String(buffer: try EnvelopeBuilder().envelope(for: secret, receivedAt: Date()).data) == #"{"kind":"Secret","data":{"password":"REDACTED"}}"#)
        var options = EnvelopeOptions()
        options.revealSecrets = ["shop/*"]
        #expect(String(buffer: try EnvelopeBuilder(options: options).envelope(for: secret, receivedAt: Date()).data).contains("c2VjcmV0"))
        options.revealSecrets = ["other/web"]
        #expect(!String(buffer: try EnvelopeBuilder(options: options).envelope(for: secret, receivedAt: Date()).data).contains("c2VjcmV0"))
        let configmap = Self.change(.added, json: #"{"kind":"ConfigMap","data":{"password":"plain"}}"#)
        #expect(String(buffer: try EnvelopeBuilder().envelope(for: configmap, receivedAt: Date()).data).contains("plain"))
    }

    @Test("the structured form is one JSON event with data spliced in")
    func structured() throws {
        let envelope = try EnvelopeBuilder().envelope(for: Self.change(.deleted, finalStateUnknown: true), receivedAt: Date())
        let event = try #require(JSONSerialization.jsonObject(with: Data(buffer: envelope.structured())) as? [String: Any])
        #expect(event["id"] as? String == envelope.id)
        #expect(event["finalstateunknown"] as? Bool == true)
        #expect((event["data"] as? [String: Any])?["kind"] as? String == "ConfigMap")
    }
}

@Suite("RFC 3339 times")
struct TimestampTests {
    @Test("Kubernetes' Time and MicroTime, and the events' milliseconds, in UTC, truncated", arguments: [
        (0, "2026-11-25T10:00:05Z"), (3, "2026-11-25T10:00:05.123Z"), (6, "2026-11-25T10:00:05.123456Z"),
    ])
    func formats(digits: Int, expected: String) {
        #expect(Timestamp.rfc3339(Date(timeIntervalSince1970: 1_795_600_805.1234567), fractionDigits: digits) == expected)
    }
}

@Suite("Who changed it, from managedFields")
struct ChangedByTests {
    struct NotAChange: Error {
        var frame: String
    }

    /// The watch lines a real kube-apiserver v1.36.2 sent while alice (User-Agent `alice-cli/1.0`)
    /// and the service account robot (`robot-controller/2.0`, and `robot-apply` as the field
    /// manager of its server-side apply) wrote one ConfigMap and one Widget; `join.md` beside it
    /// names the writer of each resourceVersion from the audit log.
    static func recordedEnvelopes() throws -> [(type: ChangeType, name: String, rv: String, envelope: Envelope)] {
        let url = Fixtures.directory.appendingPathComponent("apiserver/audit/requestresponse-blocking/watch.jsonl")
        return try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map { record in
            let parsed = try #require(try JSONSerialization.jsonObject(with: Data(record.utf8)) as? [String: Any])
            let line = try JSONSerialization.data(withJSONObject: try #require(parsed["line"]))
            let type: ChangeType
            let object: KubeObject
            switch try WatchFrame.decode(line: ByteBuffer(data: line)) {
            case .added(let added): (type, object) = (.added, added)
            case .modified(let modified): (type, object) = (.modified, modified)
            case .deleted(let deleted): (type, object) = (.deleted, deleted)
            case let other: throw NotAChange(frame: "\(other)")
            }
            let gvr = GroupVersionResource(object.metadata.kind == "Widget" ? "example.com/v1/widgets" : "core/v1/configmaps")!
            let change = Change(type: type, scope: WatchScope(gvr, namespace: "demo"), object: object)
            return (type, object.metadata.name, object.metadata.resourceVersion, try EnvelopeBuilder().envelope(for: change, receivedAt: Date()))
        }
    }

    @Test("the newest managedFields entry names the writer the audit log names; writers within one second are all named; a deletion names nobody")
    func recorded() throws {
        // From join.md: the user behind each resourceVersion, as its field manager.
        let writers = ["420": "alice-cli", "421": "alice-cli", "422": "robot-controller", "423": "alice-cli", "424": "robot-apply", "425": "robot-controller",
                       "426": "alice-cli", "427": "alice-cli", "428": "robot-controller", "430": "robot-controller", "431": "alice-cli",
                       "434": "alice-cli", "435": "robot-controller", "436": "robot-controller", "438": "alice-cli", "439": "alice-cli", "440": "alice-cli"]
        let envelopes = try Self.recordedEnvelopes()
        #expect(envelopes.count == 22)
        var named: [String: String] = [:]
        for (type, name, rv, envelope) in envelopes {
            let extensions = Dictionary(envelope.extensions.map { ($0.name, $0.value) }, uniquingKeysWith: { first, _ in first })
            guard type != .deleted else {
                #expect(extensions["changedby"] == nil, "\(name)@\(rv): a deletion's managedFields are its last writer's, not the deleter's")
                continue
            }
            let changedBy = try #require(extensions["changedby"], "\(name)@\(rv)")
            let writer = try #require(writers[rv])
            #expect(changedBy.split(separator: ",").contains(Substring(writer)), "\(name)@\(rv): \(changedBy) does not name \(writer)")
            named[rv] = changedBy
            if name == "w1", rv != "434" { #expect(extensions["changesubresource"] == "status") } else { #expect(extensions["changesubresource"] == nil) }
        }
        // One writer in the newest second: named alone. Two within it: both, in the server's order.
        #expect(named["422"] == "robot-controller" && named["425"] == "robot-controller" && named["427"] == "alice-cli")
        #expect(named["423"] == "alice-cli,robot-controller" && named["431"] == "alice-cli,robot-controller")
        #expect(named["424"] == "robot-apply,alice-cli,robot-controller")
        let extensions424 = try #require(envelopes.first { $0.rv == "424" }).envelope.extensions
        #expect(!extensions424.contains { $0.name == "changeoperation" }, "Apply and Update tie: no single operation")
        let extensions427 = try #require(envelopes.first { $0.rv == "427" }).envelope.extensions
        #expect(extensions427.contains { $0 == ("changeoperation", "Update") })
    }

    @Test("managedFields are read whether they are dropped or kept, and the kept bytes are untouched", arguments: [true, false])
    func keptOrDropped(drop: Bool) throws {
        let object = ByteBuffer(string: #"{"kind":"ConfigMap","metadata":{"name":"a","managedFields":[{"manager":"helm","operation":"Update","time":"2026-12-03T08:00:00Z","fieldsV1":{"f:data":{}}},{"manager":"kubectl-client-side-apply","operation":"Update","time":"2026-12-03T09:00:00Z","subresource":""}],"uid":"u"},"data":{"x":"1"}}"#)
        let rewritten = try ObjectRewriter.rewrite(ObjectRewriter.Edits(dropManagedFields: drop), object, readingManagedFields: true)
        #expect(rewritten.managedFields.map(\.manager) == ["helm", "kubectl-client-side-apply"])
        #expect(ManagedFieldsEntry.newest(rewritten.managedFields).map(\.manager) == ["kubectl-client-side-apply"])
        if drop {
            #expect(String(buffer: rewritten.bytes) == #"{"kind":"ConfigMap","metadata":{"name":"a","uid":"u"},"data":{"x":"1"}}"#)
        } else {
            #expect(rewritten.bytes == object)
        }
    }
}

@Suite("The merge patch in an event")
struct MergePatchTests {
    static func envelope(patchBytes: Int) throws -> Envelope {
        var meta = ObjectMeta()
        (meta.apiVersion, meta.kind, meta.name, meta.namespace, meta.uid, meta.resourceVersion) = ("v1", "ConfigMap", "a", "default", "u", "2")
        let previous = ByteBuffer(string: #"{"kind":"ConfigMap","data":{"v":"1"}}"#)
        let object = KubeObject(metadata: meta, bytes: ByteBuffer(string: #"{"kind":"ConfigMap","data":{"v":"\#(String(repeating: "x", count: patchBytes))"}}"#))
        var options = EnvelopeOptions()
        options.changedPaths = true
        options.mergePatch = true
        return try EnvelopeBuilder(options: options).envelope(for: Change(type: .modified, resource: GroupVersionResource("core/v1/configmaps")!, object: object),
                                                              receivedAt: Date(), previous: previous)
    }

    @Test("a sink that asks for it gets the patch: whole in the JSON event format, as a header up to the limit, else patchomitted")
    func placement() throws {
        let small = try Self.envelope(patchBytes: 3)
        #expect(small.mergePatch == #"{"data":{"v":"xxx"}}"#)
        #expect(!small.extensions.contains { $0.name == "mergepatch" }, "a sink that does not ask gets none")
        #expect(small.extensions(patch: .upTo(Envelope.patchHeaderLimit)).contains { $0 == ("mergepatch", #"{"data":{"v":"xxx"}}"#) })
        let event = try #require(try JSONSerialization.jsonObject(with: Data(buffer: small.structured(patch: true))) as? [String: Any])
        #expect(event["mergepatch"] as? String == #"{"data":{"v":"xxx"}}"#, "a JSON string holding the patch")
        #expect(event["changedpaths"] as? String == "/data/v")
        #expect(try JSONSerialization.jsonObject(with: Data(buffer: small.structured())) as? [String: Any] != nil)

        let large = try Self.envelope(patchBytes: Envelope.patchHeaderLimit)
        let headers = large.extensions(patch: .upTo(Envelope.patchHeaderLimit))
        #expect(!headers.contains { $0.name == "mergepatch" })
        #expect(headers.contains { $0 == ("patchomitted", "true") })
        let whole = try #require(try JSONSerialization.jsonObject(with: Data(buffer: large.structured(patch: true))) as? [String: Any])
        #expect((whole["mergepatch"] as? String)?.count == Envelope.patchHeaderLimit + 17, "the JSON event format carries it whole")
    }
}
