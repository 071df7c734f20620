import BridgeApp
import Foundation
import KubeAPI
import KubeModel
import KubeTestServer
import NIOCore
import Testing
import TestSupport

/// Mutates real inputs (the recorded kube-apiserver answers, kubeconfigs, configurations) and feeds
/// them to what parses bytes from outside: none may crash or hang, and what the validating JSON
/// scanner accepts must be JSON. Deterministic (seeded); `KUBEBRIDGE_FUZZ_ITERATIONS` runs more
/// inputs, `KUBEBRIDGE_FUZZ_SECONDS` runs each target for that long (`scripts/fuzz.sh`).
@Suite("Bad input, generated")
struct FuzzTests {
    static let iterations = Int(ProcessInfo.processInfo.environment["KUBEBRIDGE_FUZZ_ITERATIONS"] ?? "") ?? 3000
    static let seconds = Double(ProcessInfo.processInfo.environment["KUBEBRIDGE_FUZZ_SECONDS"] ?? "")

    /// Seeded: the same inputs on every run, so a finding can be replayed.
    struct Mutator {
        var random: SplitMix64

        mutating func next() -> UInt64 { random.next() }

        mutating func below(_ bound: Int) -> Int { bound <= 0 ? 0 : Int(next() % UInt64(bound)) }

        static let tokens: [[UInt8]] = ["{", "}", "[", "]", "\"", ":", ",", "\\", "\\u00", "\\ud800", "0", "-", "1e999", "null", "true",
                                        "\n", " ", "\u{7f}", "é"].map { Array($0.utf8) } + [[0x00], [0xFF], [0xC3], [0xE2, 0x82]]

        mutating func mutate(_ input: [UInt8], corpus: [[UInt8]]) -> [UInt8] {
            var bytes = input
            for _ in 0...below(4) {
                let at = below(bytes.count + 1)
                switch below(7) {
                case 0 where !bytes.isEmpty:
                    bytes[min(at, bytes.count - 1)] = UInt8(truncatingIfNeeded: next())
                case 1:
                    let end = min(bytes.count, at + 1 + below(32))
                    bytes.removeSubrange(at..<end)
                case 2:
                    bytes.insert(contentsOf: Self.tokens[below(Self.tokens.count)], at: at)
                case 3:
                    let end = min(bytes.count, at + below(64))
                    bytes.insert(contentsOf: Array(bytes[at..<end]), at: at)
                case 4:
                    bytes.removeSubrange(at...)
                case 5:
                    let other = corpus[below(corpus.count)]
                    let start = below(other.count)
                    bytes.insert(contentsOf: other[start..<min(other.count, start + below(200))], at: at)
                default:
                    let opener: [UInt8] = below(2) == 0 ? Array("[".utf8) : Array("{\"a\":".utf8)
                    bytes.insert(contentsOf: Array(repeating: opener, count: 50 + below(2000)).flatMap { $0 }, at: at)
                }
            }
            return bytes
        }
    }

    static func transcriptBodies() throws -> [[UInt8]] {
        let files = try FileManager.default.contentsOfDirectory(atPath: Transcript.directory.path).filter { $0.hasSuffix(".http") }
        var bodies: [[UInt8]] = []
        for file in files {
            let text = try String(contentsOf: Transcript.directory.appendingPathComponent(file), encoding: .utf8)
            let transcript = try Transcript.parse(text, name: file)
            bodies.append(Array(transcript.body.utf8))
            bodies += transcript.lines.map { Array($0.utf8) }
        }
        return bodies.filter { !$0.isEmpty }
    }

    /// Runs `body` on mutated inputs; an input that takes over a second is reported as a hang.
    /// It yields every few milliseconds: the suites share the cooperative pool's two threads here,
    /// and the crash tests' churn starves behind longer stretches.
    static func fuzz(_ corpus: [[UInt8]], seed: UInt64, target: String = #function, _ body: ([UInt8]) throws -> Void) async {
        var mutator = Mutator(random: SplitMix64(seed: seed))
        let end = seconds.map { ContinuousClock.now + .seconds($0) }
        var iteration = 0
        defer { print("fuzz \(target): \(iteration) inputs (seed \(seed))") }
        var lastYield = ContinuousClock.now
        while end.map({ ContinuousClock.now < $0 }) ?? (iteration < iterations) {
            defer { iteration += 1 }
            if lastYield.duration(to: .now) > .milliseconds(2) {
                await Task.yield()
                lastYield = .now
            }
            let input = mutator.mutate(corpus[mutator.below(corpus.count)], corpus: corpus)
            let started = ContinuousClock.now
            try? body(input)
            let took = started.duration(to: .now)
            if took > .seconds(1) {
                Issue.record("input \(iteration) (seed \(seed)) took \(took): \(String(decoding: input.prefix(200), as: UTF8.self))")
            }
        }
    }

    /// Whether the input is JSON, as far as the scanner is meant to tell: it checks structure, not
    /// the text inside strings. Invalid UTF-8 and surrogate escapes are left to the consumer, as
    /// kube-apiserver (Go's encoder) never sends either; Foundation refuses both.
    static func isJSON(_ bytes: [UInt8]) -> Bool {
        guard String(validating: bytes, as: UTF8.self) != nil, !hasSurrogateEscape(bytes), !hasHugeExponent(bytes) else { return true }
        return (try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])) != nil
    }

    /// The bytes with every string literal's contents taken out (`"a,]"` becomes `""`): what the
    /// checks below look at is structure, never text.
    static func structure(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var inString = false
        var escaped = false
        for byte in bytes {
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                if inString { continue }
            } else if byte == UInt8(ascii: "\"") {
                inString = true
            }
            out.append(byte)
        }
        return out
    }

    /// Whether a `,` comes right before a `}` or `]`, outside strings. Foundation's parser takes
    /// that (`{"a":1,}`); RFC 8259, Go's encoder and the bridge's scanner do not.
    static func hasTrailingComma(_ bytes: [UInt8]) -> Bool {
        var last: UInt8 = 0
        for byte in structure(bytes) where ![UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t")].contains(byte) {
            if (byte == UInt8(ascii: "}") || byte == UInt8(ascii: "]")) && last == UInt8(ascii: ",") { return true }
            last = byte
        }
        return false
    }

    /// Whether a number outside strings has a positive exponent of 300 or more (`4041e999`): JSON's
    /// grammar allows it, Foundation refuses what a Double cannot hold, and the scanner, which
    /// checks the grammar, leaves the range to whoever reads the number.
    static func hasHugeExponent(_ bytes: [UInt8]) -> Bool {
        let bytes = structure(bytes)
        let digits = UInt8(ascii: "0")...UInt8(ascii: "9")
        var index = 1
        while index < bytes.count {
            defer { index += 1 }
            guard bytes[index] | 0x20 == UInt8(ascii: "e"), digits.contains(bytes[index - 1]) else { continue }
            index += 1
            let negative = index < bytes.count && bytes[index] == UInt8(ascii: "-")
            if index < bytes.count, negative || bytes[index] == UInt8(ascii: "+") { index += 1 }
            var exponent = 0
            while index < bytes.count, digits.contains(bytes[index]) {
                exponent = min(exponent * 10 + Int(bytes[index] - UInt8(ascii: "0")), 100_000)
                index += 1
            }
            if !negative, exponent >= 300 { return true }
        }
        return false
    }

    static func hasSurrogateEscape(_ bytes: [UInt8]) -> Bool {
        bytes.indices.dropLast(3).contains { index in
            bytes[index] == UInt8(ascii: "\\") && bytes[index + 1] == UInt8(ascii: "u") && (bytes[index + 2] | 0x20) == UInt8(ascii: "d")
                && "89abAB".utf8.contains(bytes[index + 3])
        }
    }

    @Test("watch frames and list pages: no crash, no hang, and nothing the JSON parser refuses is accepted")
    func watchFramesAndLists() async throws {
        let corpus = try Self.transcriptBodies()
        var accepted = 0
        await Self.fuzz(corpus, seed: 1) { input in
            let buffer = ByteBuffer(bytes: input)
            if (try? WatchFrame.decode(line: buffer)) != nil {
                accepted += 1
                #expect(Self.isJSON(input), "a watch frame that is not JSON was accepted: \(String(decoding: input.prefix(300), as: UTF8.self))")
            }
            if (try? ObjectList.decode(buffer)) != nil {
                #expect(Self.isJSON(input), "a list page that is not JSON was accepted: \(String(decoding: input.prefix(300), as: UTF8.self))")
            }
        }
        print("fuzz: \(Self.iterations) watch frames and list pages, \(accepted) accepted as frames")
    }

    @Test("object redaction: no crash, no hang; a JSON object is rewritten, and the result is JSON")
    func redaction() async throws {
        let corpus = try Self.transcriptBodies().filter { $0.first == UInt8(ascii: "{") }
        // A finding of this test: Foundation's parser takes a trailing comma, the rewriter refuses it.
        #expect(throws: (any Error).self) { try ObjectRewriter.apply(ObjectRewriter.Edits(dropManagedFields: true), to: ByteBuffer(string: #"{"kind":"ConfigMap","data":{"a":"b",}}"#)) }
        #expect(Self.hasTrailingComma(Array(#"{"a":[1, ],"b":"x"}"#.utf8)))
        #expect(Self.hasHugeExponent(Array(#"{"code":4041e999}"#.utf8)) && !Self.hasHugeExponent(Array(#"{"e":"1e999","f":1e-999,"g":2e30}"#.utf8)))
        #expect(!Self.hasTrailingComma(Array(#"{"a":"1,}","b":"\",]"}"#.utf8)))
        await Self.fuzz(corpus, seed: 2) { input in
            let valid = !Self.hasTrailingComma(input) && (try? JSONSerialization.jsonObject(with: Data(input))) is [String: Any]
            var edits = ObjectRewriter.Edits(dropManagedFields: true)
            edits.redactDataWith = "REDACTED"
            do {
                // Its input is a watch frame's or list page's object, which the scanner validated already.
                let output = try ObjectRewriter.apply(edits, to: ByteBuffer(bytes: input))
                if valid {
                    #expect(Self.isJSON(Array(output.readableBytesView)), "rewriting made something that is not JSON from: \(String(decoding: input.prefix(300), as: UTF8.self))")
                }
            } catch {
                #expect(!valid, "a JSON object could not be rewritten (\(error)): \(String(decoding: input.prefix(300), as: UTF8.self))")
            }
        }
    }

    @Test("discovery documents, aggregated and legacy: no crash, no hang, no subresource taken for a resource")
    func discoveryDocuments() async throws {
        let corpus = try Self.transcriptBodies().filter { body in
            ["APIGroupDiscoveryList", "APIVersions", "APIGroupList", "APIResourceList"].contains { String(decoding: body.prefix(120), as: UTF8.self).contains($0) }
        }
        #expect(corpus.count >= 5)
        var read = 0
        await Self.fuzz(corpus, seed: 5) { input in
            let buffer = ByteBuffer(bytes: input)
            if (try? KubeClient.aggregatedResources(buffer)) != nil { read += 1 }
            _ = try? KubeClient.legacyGroupVersions(buffer, isCore: true)
            _ = try? KubeClient.legacyGroupVersions(buffer, isCore: false)
            if let resources = try? KubeClient.legacyResources(buffer, group: "apps", version: "v1", preferred: true) {
                #expect(!resources.contains { $0.gvr.resource.contains("/") }, "a subresource was taken for a resource")
            }
        }
        #expect(read > 0, "no mutation was a readable aggregated document: the corpus or the mutator is off")
    }

    @Test("configuration files: every mutation is read or refused with problems, never a crash")
    func configurations() async throws {
        let deploy = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("deploy")
        let corpus = try ["base", "overlays/kafka", "overlays/nats", "overlays/webhook"].map {
            Array(try String(contentsOf: deploy.appendingPathComponent("\($0)/kubebridge.yaml"), encoding: .utf8).utf8)
        }
        let environment = ["KAFKA_PASSWORD": "x", "WEBHOOK_SECRET": "whsec_" + Data("fuzz".utf8).base64EncodedString()]
        var refused = 0
        await Self.fuzz(corpus, seed: 3) { input in
            do {
                _ = try Configuration.parse(String(decoding: input, as: UTF8.self), file: "fuzz.yaml", environment: environment)
            } catch let error as ConfigurationError {
                refused += 1
                #expect(!error.problems.isEmpty)
            }
        }
        #expect(refused > 0)
    }

    @Test("kubeconfig files: every mutation is loaded or refused with a KubeConfigError, never a crash")
    func kubeconfigs() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let seed = """
            apiVersion: v1
            kind: Config
            current-context: test
            clusters:
            - name: test
              cluster:
                server: https://127.0.0.1:6443
                certificate-authority-data: \(Data("not a certificate".utf8).base64EncodedString())
            users:
            - name: test
              user:
                token: abc
            contexts:
            - name: test
              context: {cluster: test, user: test, namespace: default}
            """
        let path = directory.appendingPathComponent("kubeconfig").path
        var unexpected: [String] = []
        await Self.fuzz([Array(seed.utf8)], seed: 4) { input in
            FileManager.default.createFile(atPath: path, contents: Data(input))
            do {
                _ = try KubeConfigLoader.load(kubeconfig: path, environment: [:])
            } catch is KubeConfigError {
            } catch {
                unexpected.append("\(error)")
            }
        }
        #expect(unexpected.isEmpty, "errors other than KubeConfigError: \(Set(unexpected).prefix(5))")
    }
}
