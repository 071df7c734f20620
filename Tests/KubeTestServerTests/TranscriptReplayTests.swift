import Foundation
import KubeTestServer
import Testing
import TestSupport

/// Replays the recorded kube-apiserver session (Fixtures/apiserver) against the test server, in
/// order, recreating between the transcripts the state the recording had, and holds every answer to
/// the recorded one: status, header names and order, stable header values, body shape and values.
@Suite("Test API server answers as kube-apiserver did")
struct TranscriptReplayTests {
    final class Replay {
        let server: KubeTestServer
        let client: RawAPIClient
        var problems: [String] = []

        init(server: KubeTestServer, client: RawAPIClient) {
            self.server = server
            self.client = client
        }

        /// Sends the transcript's request (or a rewritten one) and checks the answer.
        @discardableResult
        func check(_ number: Int, target: String? = nil, body: String? = nil, shape: JSONShape? = nil) async throws -> RawAPIClient.Response {
            let transcript = try Transcript.load(number)
            let response = try await client.send(transcript, target: target, body: body)
            record(transcript, TranscriptCheck.head(transcript, status: response.status, headers: response.headers, http2: client.http2)
                + TranscriptCheck.body(transcript, text: response.text, shape: shape))
            return response
        }

        /// Opens the transcript's watch, lets `during` make changes, and checks the head and lines.
        func checkWatch(
            _ number: Int, target: String, readFor limit: Duration, stopAfter count: Int = .max, expectEnd: Bool,
            shape: JSONShape = JSONShape(), during: (() async throws -> Void)? = nil
        ) async throws {
            let transcript = try Transcript.load(number)
            let stream = try await client.openStream(transcript.method, target, headers: transcript.requestHeaders)
            var problems = TranscriptCheck.head(transcript, status: stream.status, headers: stream.headers, http2: client.http2)
            async let collected = stream.lines(for: limit, stopAfter: count)
            if let during { try await during() }
            let (lines, ended) = await collected
            problems += TranscriptCheck.lines(transcript, lines: lines, shape: shape)
            if ended != expectEnd { problems.append(expectEnd ? "the server did not end the stream" : "the stream ended early") }
            record(transcript, problems)
        }

        func record(_ transcript: Transcript, _ found: [String]) {
            problems += found.map { "\(transcript.name): \($0)" }
        }

        /// A write made the way the recording's client made it (its user agent names the field manager).
        @discardableResult
        func write(_ method: String, _ path: String, _ body: String? = nil, contentType: String = "application/json") async throws -> RawAPIClient.Response {
            let response = try await client.send(method, path, headers: [
                ("Accept", "application/json"), ("Content-Type", contentType), ("User-Agent", "kube-client-test/v0.1.0"),
            ], body: body)
            #expect(response.status < 300, "\(method) \(path): \(response.status) \(response.text)")
            return response
        }

        func json(_ response: RawAPIClient.Response) throws -> JSON { try JSON(parsing: response.body) }
    }

    @Test("every transcript, replayed in order", arguments: ["h2", "http/1.1"])
    func replaysEveryTranscript(applicationProtocol: String) async throws {
        var options = KubeTestServer.Options()
        options.bookmarkInterval = .seconds(4)
        options.http2 = true
        let server = try await KubeTestServer.start(options)
        let client = try RawAPIClient(server: server, http2: applicationProtocol == "h2")
        let replay = Replay(server: server, client: client)
        defer { #expect(replay.problems.isEmpty, "\(replay.problems.joined(separator: "\n"))") }

        for number in 1...11 { try await replay.check(number) }
        #expect(try await server.connections().map(\.applicationProtocol) == [applicationProtocol])
        try await waitUntil {
            let crd = try await client.send("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
            return crd.text.contains("\"Established\"")
        }
        try await replay.check(12)
        try await replay.check(13)
        try await replay.check(14)
        let created = try replay.json(try await replay.check(15))
        for number in 16...19 { try await replay.check(number) }

        // Someone changes the ConfigMap between the GET and the PUT, so the PUT's version is stale.
        try await replay.write("PATCH", "/api/v1/namespaces/demo/configmaps/example", #"{"data":{"color":"green"}}"#,
                               contentType: "application/merge-patch+json")
        let stalePut = try Transcript.load(20).requestBody!
            .replacingOccurrences(of: #""resourceVersion":"235""#, with: #""resourceVersion":"\#(created["metadata"]!["resourceVersion"]!.stringValue!)""#)
        try await replay.check(20, body: stalePut)
        try await replay.check(21)
        try await replay.check(22)
        try await replay.write("POST", "/apis/example.com/v1/namespaces/demo/widgets",
                               #"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w-temp"},"spec":{"size":9}}"#)
        for number in 23...30 { try await replay.check(number) }

        // The objects the list transcripts show, and two ConfigMaps elsewhere for the cluster-wide list.
        for (name, labels) in [("cm-a", #"{"app":"demo"}"#), ("cm-b", #"{"app":"demo"}"#), ("cm-c", #"{"tier":"x"}"#)] {
            try await replay.write("POST", "/api/v1/namespaces/demo/configmaps",
                                   #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"\#(name)","labels":\#(labels)},"data":{"k":"\#(name)"}}"#)
        }
        try await replay.write("POST", "/api/v1/namespaces", #"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"other"}}"#)
        for name in ["cm-other", "cm-other-2"] {
            try await replay.write("POST", "/api/v1/namespaces/other/configmaps",
                                   #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"\#(name)"},"data":{"k":"\#(name)"}}"#)
        }
        try await replay.write("POST", "/apis/example.com/v1/namespaces/demo/widgets",
                               #"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w2"},"spec":{"size":2}}"#)

        let page1 = try replay.json(try await replay.check(31))
        let listVersion = page1["metadata"]!["resourceVersion"]!.stringValue!
        let token = page1["metadata"]!["continue"]!.stringValue!
        try await replay.check(32, target: "/api/v1/namespaces/demo/configmaps?limit=2&continue=\(token)")
        for number in 33...34 { try await replay.check(number) }
        let widgetList = try replay.json(try await replay.check(35))
        let widgetListVersion = widgetList["metadata"]!["resourceVersion"]!.stringValue!
        for number in 36...37 { try await replay.check(number) }

        // 38 and 39 used timeoutSeconds=10 with writes a second apart; the same, faster.
        try await replay.checkWatch(
            38, target: "/api/v1/namespaces/demo/configmaps?allowWatchBookmarks=true&resourceVersion=\(listVersion)&timeoutSeconds=3&watch=true",
            readFor: .seconds(6), expectEnd: true
        ) {
            // The recorded bookmark came after the writes: it waits for them, however slow they are.
            try await server.pauseBookmarks(true)
            try await Task.sleep(for: .milliseconds(100))
            try await replay.write("POST", "/api/v1/namespaces/demo/configmaps", #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"watched"},"data":{"v":"1"}}"#)
            for value in ["2", "3"] {
                try await replay.write("PATCH", "/api/v1/namespaces/demo/configmaps/watched", #"{"data":{"v":"\#(value)"}}"#, contentType: "application/merge-patch+json")
            }
            try await replay.write("DELETE", "/api/v1/namespaces/demo/configmaps/watched")
            try await server.pauseBookmarks(false)
        }
        try await replay.checkWatch(
            39, target: "/apis/example.com/v1/namespaces/demo/widgets?allowWatchBookmarks=true&resourceVersion=\(widgetListVersion)&timeoutSeconds=3&watch=true",
            readFor: .seconds(6), expectEnd: true
        ) {
            try await server.pauseBookmarks(true)
            try await Task.sleep(for: .milliseconds(100))
            try await replay.write("POST", "/apis/example.com/v1/namespaces/demo/widgets", #"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w-watched"},"spec":{"size":1}}"#)
            for size in ["2", "3"] {
                try await replay.write("PATCH", "/apis/example.com/v1/namespaces/demo/widgets/w-watched", #"{"spec":{"size":\#(size)}}"#, contentType: "application/merge-patch+json")
            }
            try await replay.write("DELETE", "/apis/example.com/v1/namespaces/demo/widgets/w-watched")
            try await server.pauseBookmarks(false)
        }
        for number in 40...44 {
            let target = try Transcript.load(number).target.replacingOccurrences(of: "timeoutSeconds=5", with: "timeoutSeconds=1")
            try await replay.checkWatch(number, target: target, readFor: .seconds(4), expectEnd: true)
        }

        let lease = try replay.json(try await replay.check(45))
        let leaseVersion = lease["metadata"]!["resourceVersion"]!.stringValue!
        let leaseUID = lease["metadata"]!["uid"]!.stringValue!
        try await replay.check(46)
        func leaseBody(_ number: Int) throws -> String {
            try Transcript.load(number).requestBody!
                .replacingOccurrences(of: #""resourceVersion":"281""#, with: #""resourceVersion":"\#(leaseVersion)""#)
                .replacingOccurrences(of: "a83f30dc-1d7d-460a-b1b1-4d9492b47ab3", with: leaseUID)
        }
        try await replay.check(47, body: try leaseBody(47))
        try await replay.check(48, body: try leaseBody(48))
        for number in 49...52 { try await replay.check(number) }

        // The recording re-created its two Widgets before deleting the CRD under an open watch.
        for name in ["w1", "w2"] { try await replay.write("DELETE", "/apis/example.com/v1/namespaces/demo/widgets/\(name)") }
        for (name, size) in [("w1", 1), ("w2", 2)] {
            try await replay.write("POST", "/apis/example.com/v1/namespaces/demo/widgets",
                                   #"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"\#(name)"},"spec":{"size":\#(size)}}"#)
        }
        let current = try replay.json(try await client.send("GET", "/apis/example.com/v1/namespaces/demo/widgets"))
        let widgetsVersion = current["metadata"]!["resourceVersion"]!.stringValue!
        try await replay.checkWatch(
            53, target: "/apis/example.com/v1/namespaces/demo/widgets?allowWatchBookmarks=true&resourceVersion=\(widgetsVersion)&watch=true",
            readFor: .seconds(5), expectEnd: true
        ) {
            try await Task.sleep(for: .milliseconds(200))
            try await replay.check(54)
        }
        try await replay.check(55)
        for number in 56...58 { try await replay.check(number) }

        // etcd compacts past the first list's version; the watch cache still holds the window.
        try await server.compact(rollWatchCache: false)
        try await replay.check(59, target: "/api/v1/namespaces/demo/configmaps?limit=2&continue=\(token)")
        try await replay.check(60, target: "/api/v1/namespaces/demo/configmaps?resourceVersion=\(listVersion)&resourceVersionMatch=Exact")
        try await replay.checkWatch(
            61, target: "/api/v1/namespaces/demo/events?allowWatchBookmarks=true&resourceVersion=\(listVersion)&watch=true",
            readFor: .seconds(3), expectEnd: true)
        try await replay.checkWatch(
            62, target: "/api/v1/namespaces/demo/configmaps?allowWatchBookmarks=true&resourceVersion=\(listVersion)&watch=true",
            readFor: .seconds(2), stopAfter: 4, expectEnd: false)
        // Now the cache's window rolls past it too.
        try await server.compact(rollWatchCache: true)
        try await replay.checkWatch(
            63, target: "/api/v1/namespaces/demo/configmaps?allowWatchBookmarks=true&resourceVersion=\(listVersion)&watch=true",
            readFor: .seconds(3), expectEnd: true, shape: JSONShape(extraVolatileKeys: ["message"]))
        let demoList = try replay.json(try await client.send("GET", "/api/v1/namespaces/demo/configmaps"))
        let demoVersion = demoList["metadata"]!["resourceVersion"]!.stringValue!
        try await replay.checkWatch(
            64, target: "/api/v1/namespaces/demo/configmaps?allowWatchBookmarks=true&resourceVersion=\(demoVersion)&watch=true",
            readFor: .seconds(8), stopAfter: 1, expectEnd: false
        ) {
            try await Task.sleep(for: .milliseconds(300))
            try await replay.write("PATCH", "/api/v1/namespaces/other/configmaps/cm-other", #"{"data":{"k":"changed"}}"#,
                                   contentType: "application/merge-patch+json")
        }
        try await replay.check(65)
        try await client.shutdown()
        try await server.stop()
    }
}
