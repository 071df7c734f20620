import Foundation
import KubeModel
import NIOCore
import Testing
import TestSupport

@Suite("JSONDiff: changed paths and merge patches")
struct JSONDiffTests {
    static func value(_ text: String) throws -> JSONValue { try JSONValue(parsing: ByteBuffer(string: text)) }

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var old: String
        var new: String
        var paths: [String]
        /// The merge patch, compact; nil when the states are equal.
        var patch: String?
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "a scaled deployment: one scalar", old: #"{"spec":{"replicas":1,"paused":false}}"#, new: #"{"spec":{"replicas":3,"paused":false}}"#,
             paths: ["/spec/replicas"], patch: #"{"spec":{"replicas":3}}"#),
        Case(name: "a label added and another removed: the members, not their parents",
             old: #"{"metadata":{"labels":{"app":"web","tier":"a"}}}"#, new: #"{"metadata":{"labels":{"app":"web","team":"x"}}}"#,
             paths: ["/metadata/labels/team", "/metadata/labels/tier"], patch: #"{"metadata":{"labels":{"tier":null,"team":"x"}}}"#),
        Case(name: "a new subtree is one path where it starts", old: #"{"spec":{}}"#, new: #"{"spec":{"template":{"a":{"b":1,"c":[1,2]}}}}"#,
             paths: ["/spec/template"], patch: #"{"spec":{"template":{"a":{"b":1,"c":[1,2]}}}}"#),
        Case(name: "arrays are compared element by element, but patched whole",
             old: #"{"c":[{"image":"a:1","name":"x"},{"image":"b:1","name":"y"}]}"#, new: #"{"c":[{"image":"a:2","name":"x"},{"image":"b:1","name":"y"},{"name":"z"}]}"#,
             paths: ["/c/0/image", "/c/2"], patch: #"{"c":[{"image":"a:2","name":"x"},{"image":"b:1","name":"y"},{"name":"z"}]}"#),
        Case(name: "resourceVersion, generation and managedFields are never changed paths, but the patch has them",
             old: #"{"metadata":{"resourceVersion":"1","generation":1,"managedFields":[]},"data":{"k":"v"}}"#,
             new: #"{"metadata":{"resourceVersion":"2","generation":2,"managedFields":[{}]},"data":{"k":"v"}}"#,
             paths: [], patch: #"{"metadata":{"resourceVersion":"2","generation":2,"managedFields":[{}]}}"#),
        Case(name: "a type change is reported where it happens", old: #"{"a":{"b":1}}"#, new: #"{"a":[1]}"#, paths: ["/a"], patch: #"{"a":[1]}"#),
        Case(name: "~ and / in names are escaped as RFC 6901 says",
             old: #"{"metadata":{"annotations":{"example.com/x~y":"1"}}}"#, new: #"{"metadata":{"annotations":{"example.com/x~y":"2"}}}"#,
             paths: ["/metadata/annotations/example.com~1x~0y"], patch: #"{"metadata":{"annotations":{"example.com/x~y":"2"}}}"#),
        Case(name: "equal states: nothing", old: #"{"a":1,"b":[true,null,"s"]}"#, new: #"{"b":[true,null,"s"],"a":1}"#, paths: [], patch: nil),
        Case(name: "numbers compare as written, strings with their escapes decoded", old: #"{"n":1.5,"s":"\u00e9"}"#, new: #"{"n":1.50,"s":"é"}"#,
             paths: ["/n"], patch: #"{"n":1.50}"#),
    ]

    @Test("changed paths and the merge patch", arguments: cases)
    func table(_ row: Case) throws {
        let old = try Self.value(row.old)
        let new = try Self.value(row.new)
        #expect(JSONDiff.changedPaths(from: old, to: new) == row.paths)
        let patch = JSONDiff.mergePatch(from: old, to: new)
        #expect(patch?.text == row.patch)
    }

    @Test("more than the limit: the deepest paths give way to their parents until the limit holds")
    func limit() throws {
        let members = (0..<100).map { #""k\#($0)":\#($0)"# }.joined(separator: ",")
        let old = try Self.value(#"{"spec":{"a":1},"data":{\#(members)}}"#)
        let new = try Self.value(#"{"spec":{"a":2},"data":{\#(members.replacingOccurrences(of: ":", with: ":1"))}}"#)
        #expect(JSONDiff.changedPaths(from: old, to: new, limit: 1000).count == 101)
        #expect(JSONDiff.changedPaths(from: old, to: new) == ["/data", "/spec/a"])
        #expect(JSONDiff.changedPaths(from: old, to: new, limit: 1) == [""])
    }

    @Test("applying the patch to the old state gives the new one, for random objects", arguments: 0..<200)
    func roundTrip(seed: Int) throws {
        var random = SplitMix64(seed: UInt64(seed) &+ 0x1234_5678)
        let old = Self.randomObject(&random, depth: 0)
        var new = old
        for _ in 0..<Int.random(in: 1...4, using: &random) { new = Self.mutate(new, &random, depth: 0) }
        let patch = JSONDiff.mergePatch(from: old, to: new)
        #expect((patch.map { mergePatched(old, by: $0) } ?? old) == new, "\(old.text) → \(new.text) by \(patch?.text ?? "nil")")
        #expect(JSONDiff.changedPaths(from: old, to: new).isEmpty == (old == new))
        #expect(try JSONValue(parsing: ByteBuffer(string: new.text)) == new, "written and read again")
    }

    static func randomScalar(_ random: inout SplitMix64) -> JSONValue {
        switch Int.random(in: 0..<4, using: &random) {
        case 0: .number("\(Int.random(in: -5...5, using: &random))")
        case 1: .string(["a", "b/c", "é", "~x", "q\"uote"].randomElement(using: &random)!)
        case 2: .bool(Bool.random(using: &random))
        default: .array((0..<Int.random(in: 0...3, using: &random)).map { _ in .number("\(Int.random(in: 0...9, using: &random))") })
        }
    }

    static func randomObject(_ random: inout SplitMix64, depth: Int) -> JSONValue {
        var object = JSONObject()
        for _ in 0..<Int.random(in: 0...4, using: &random) {
            let key = ["a", "b", "c", "d", "e/f"].randomElement(using: &random)!
            object[key] = depth < 3 && Bool.random(using: &random) ? randomObject(&random, depth: depth + 1) : randomScalar(&random)
        }
        return .object(object)
    }

    static func mutate(_ value: JSONValue, _ random: inout SplitMix64, depth: Int) -> JSONValue {
        guard case .object(var object) = value, depth < 3 else { return randomScalar(&random) }
        let key = ["a", "b", "c", "d", "e/f", "g"].randomElement(using: &random)!
        switch Int.random(in: 0..<3, using: &random) {
        case 0: object[key] = nil
        case 1: object[key] = mutate(object[key] ?? randomObject(&random, depth: depth + 1), &random, depth: depth + 1)
        default: object[key] = randomScalar(&random)
        }
        return .object(object)
    }
}
