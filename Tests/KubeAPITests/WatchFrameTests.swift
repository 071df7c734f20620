import KubeAPI
import KubeModel
import NIOCore
import Testing
import TestSupport

@Suite("Watch frames and list pages decode as the server sends them")
struct WatchFrameTests {
    @Test("every recorded watch line decodes to its type and metadata, keeping the object bytes")
    func recordedWatchLines() throws {
        for number in [38, 39, 40, 41, 42, 43, 44, 53, 61, 62, 63, 64] {
            let transcript = try Transcript.load(number)
            for line in transcript.lines {
                let frame = try WatchFrame.decode(line: ByteBuffer(string: line))
                let objectText = String(line.dropFirst(line.firstRange(of: #""object":"#)!.upperBound.utf16Offset(in: line)).dropLast())
                switch frame {
                case .added(let object), .modified(let object), .deleted(let object):
                    #expect(object.text == objectText, "\(transcript.name): object bytes must be the line's object, untouched")
                    #expect(!object.metadata.uid.isEmpty)
                    #expect(!object.metadata.resourceVersion.isEmpty)
                    #expect(object.metadata.namespace == "demo")
                    #expect(["ConfigMap", "Widget"].contains(object.metadata.kind))
                case .bookmark(let resourceVersion, let initialEventsEnd):
                    #expect(!resourceVersion.isEmpty)
                    #expect(initialEventsEnd == line.contains("initial-events-end"))
                case .error(let status):
                    #expect(status.code == 410)
                    #expect(status.reason == "Expired")
                }
                #expect(frame.typeName == String(line.split(separator: "\"")[3]))
            }
        }
    }

    @Test("metadata of a recorded event", arguments: [38])
    func metadataFields(number: Int) throws {
        let line = try Transcript.load(number).lines[1]
        guard case .modified(let object) = try WatchFrame.decode(line: ByteBuffer(string: line)) else {
            Issue.record("expected MODIFIED")
            return
        }
        #expect(object.metadata.name == "watched")
        #expect(object.metadata.apiVersion == "v1")
        #expect(object.metadata.uid == "0de05f38-605b-4e4b-acb9-f6a59626d3bd")
        #expect(object.metadata.resourceVersion == "258")
        #expect(object.metadata.generation == nil)
    }

    @Test("escapes, labels, generation and unknown fields")
    func escapesAndLabels() throws {
        let line = #"{"object":{"spec":{"a":[1,2.5e3,-0.1,true,null,{"x":"\u00e9"}]},"metadata":{"name":"a\"b\\c","namespace":"ns","labels":{"k\u00e9":"v\n","app":"x"},"generation":7,"uid":"u","resourceVersion":"12"},"kind":"Widget","apiVersion":"example.com/v1"},"type":"MODIFIED"}"#
        guard case .modified(let object) = try WatchFrame.decode(line: ByteBuffer(string: line)) else {
            Issue.record("expected MODIFIED")
            return
        }
        #expect(object.metadata.name == "a\"b\\c")
        #expect(object.metadata.labels == ["ké": "v\n", "app": "x"])
        #expect(object.metadata.generation == 7)
        #expect(object.metadata.kind == "Widget")
        #expect(object.text.hasPrefix(#"{"spec":"#))
    }

    @Test("malformed lines are errors, never a skipped or invented event", arguments: [
        "not json",
        #"{"type":"ADDED","object":{"metadata":{"name":"x"}"#,
        #"{"type":"ADDED"}"#,
        #"{"object":{}}"#,
        #"{"type":"SURPRISE","object":{}}"#,
        #"{"type":"ADDED","object":{}} trailing"#,
        #"{"type":"ADDED","object":{"metadata":{"name":"x\q"}}}"#,
        #"{"type":"ADDED","object":{"metadata":{"generation":"one"}}}"#,
        #"{"type":"ADDED","object":{"a":01}}"#,
        #"{"type":"ADDED","object":{"a":[1,]}}"#,
        #"{"type":"ADDED","object":{"a":1,}}"#,
        #"{"type":"ERROR","object":{"kind":"Status","code":"x"}}"#,
        "[]",
        "",
    ])
    func malformed(line: String) {
        #expect(throws: (any Error).self) { try WatchFrame.decode(line: ByteBuffer(string: line)) }
    }

    @Test("deep nesting is refused without exhausting the stack")
    func deepNesting() {
        let line = #"{"type":"ADDED","object":{"a":"# + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "}}"
        #expect(throws: (any Error).self) { try WatchFrame.decode(line: ByteBuffer(string: line)) }
    }

    @Test("a typed list's items get kind and apiVersion; the page's cursor is read")
    func typedListPage() throws {
        let list = try ObjectList.decode(ByteBuffer(string: try Transcript.load(31).body))
        #expect(list.kind == "ConfigMapList")
        #expect(list.resourceVersion == "247")
        #expect(list.continueToken == "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MjQ3LCJzdGFydCI6Ii9jbS1iXHUwMDAwIn0")
        #expect(list.remainingItemCount == 1)
        #expect(list.items.map(\.metadata.name) == ["cm-a", "cm-b"])
        for item in list.items {
            #expect(item.metadata.kind == "ConfigMap")
            #expect(item.metadata.apiVersion == "v1")
            #expect(item.text.hasPrefix(#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm-"#))
        }
    }

    @Test("a custom resource list keeps its items as sent, and an empty continue means the last page")
    func customResourceListPage() throws {
        let body = try Transcript.load(35).body
        let list = try ObjectList.decode(ByteBuffer(string: body))
        #expect(list.kind == "WidgetList")
        #expect(list.continueToken == nil)
        #expect(list.items.count == 2)
        #expect(body.contains(list.items[0].text))
        #expect(list.items[1].metadata.name == "w2")
    }
}
