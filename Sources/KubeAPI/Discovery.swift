import Foundation
import KubeModel
import NIOCore
import NIOFoundationCompat

/// A group version whose resources could not be discovered (an unavailable aggregated API, say).
public struct DiscoveryFailure: Sendable, CustomStringConvertible {
    public var groupVersion: String
    public var message: String
    public var description: String { "\(groupVersion): \(message)" }
}

/// What the server serves.
public struct DiscoveryResult: Sendable {
    public enum Method: String, Sendable {
        case aggregatedV2 = "aggregated apidiscovery.k8s.io/v2"
        case aggregatedV2beta1 = "aggregated apidiscovery.k8s.io/v2beta1"
        case legacy = "legacy /api and /apis"
    }

    /// Every served resource of every version, subresources left out.
    public var resources: [APIResource]
    /// Group versions that failed; the others are complete.
    public var failures: [DiscoveryFailure]
    public var method: Method

    /// The resources of each group's preferred version, so that one object is seen once.
    public var preferred: [APIResource] { resources.filter(\.isPreferredVersion) }
}

extension KubeClient {
    /// client-go's order: aggregated v2, aggregated v2beta1, then plain JSON (legacy discovery).
    static let discoveryAccept =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"

    /// Discovers every served resource: aggregated discovery when the server offers it (two
    /// requests), legacy discovery otherwise (one request per group version).
    public func discover() async throws -> DiscoveryResult {
        async let coreResponse = send(method: .GET, path: "/api", accept: Self.discoveryAccept)
        async let namedResponse = send(method: .GET, path: "/apis", accept: Self.discoveryAccept)
        let (core, named) = try await (coreResponse, namedResponse)
        var resources: [APIResource] = []
        var failures: [DiscoveryFailure] = []
        var method = DiscoveryResult.Method.legacy
        for (response, isCore) in [(core, true), (named, false)] {
            let contentType = response.headers.first { $0.0.lowercased() == "content-type" }?.1 ?? ""
            if contentType.contains("as=APIGroupDiscoveryList") {
                method = contentType.contains("v=v2beta1") ? .aggregatedV2beta1 : .aggregatedV2
                let (found, failed) = try parseAggregated(response.body, path: isCore ? "/api" : "/apis")
                resources += found
                failures += failed
            } else {
                let (found, failed) = try await legacy(response.body, isCore: isCore)
                resources += found
                failures += failed
            }
        }
        return DiscoveryResult(resources: resources, failures: failures, method: method)
    }

    // MARK: Aggregated

    struct GroupDiscoveryList: Decodable {
        struct Item: Decodable {
            struct Metadata: Decodable { var name: String? }
            var metadata: Metadata?
            var versions: [Version]?
        }

        struct Version: Decodable {
            var version: String
            var resources: [Resource]?
            var freshness: String?
        }

        struct Resource: Decodable {
            struct Kind: Decodable {
                var group: String?
                var version: String?
                var kind: String?
            }

            var resource: String
            var responseKind: Kind?
            var scope: String?
            var singularResource: String?
            var verbs: [String]?
            var shortNames: [String]?
            var categories: [String]?
        }

        var items: [Item]?
    }

    func parseAggregated(_ body: ByteBuffer, path: String) throws -> ([APIResource], [DiscoveryFailure]) {
        do {
            return try Self.aggregatedResources(body)
        } catch {
            throw KubeAPIError(code: .malformedResponse, message: "aggregated discovery is not valid: \(error)", request: "GET \(configuration.server)\(path)")
        }
    }

    /// The resources of an aggregated discovery document (`APIGroupDiscoveryList`).
    package static func aggregatedResources(_ body: ByteBuffer) throws -> ([APIResource], [DiscoveryFailure]) {
        let list = try JSONDecoder().decode(GroupDiscoveryList.self, from: body)
        var resources: [APIResource] = []
        var failures: [DiscoveryFailure] = []
        for item in list.items ?? [] {
            let group = item.metadata?.name ?? ""
            for (index, version) in (item.versions ?? []).enumerated() {
                let groupVersion = group.isEmpty ? version.version : "\(group)/\(version.version)"
                if version.freshness == "Stale" {
                    failures.append(DiscoveryFailure(groupVersion: groupVersion, message: "stale discovery document (the aggregated API is unavailable)"))
                    continue
                }
                for resource in version.resources ?? [] {
                    resources.append(APIResource(
                        gvr: GroupVersionResource(group: group, version: version.version, resource: resource.resource),
                        kind: resource.responseKind?.kind ?? "", singular: resource.singularResource ?? "",
                        namespaced: resource.scope == "Namespaced", verbs: resource.verbs ?? [],
                        shortNames: resource.shortNames ?? [], categories: resource.categories ?? [], isPreferredVersion: index == 0))
                }
            }
        }
        return (resources, failures)
    }

    // MARK: Legacy

    struct APIVersions: Decodable { var versions: [String] }

    struct APIGroupList: Decodable {
        struct Group: Decodable {
            struct Version: Decodable {
                var groupVersion: String
                var version: String
            }

            var name: String
            var versions: [Version]
            var preferredVersion: Version?
        }

        var groups: [Group]
    }

    struct APIResourceList: Decodable {
        struct Resource: Decodable {
            var name: String
            var singularName: String?
            var namespaced: Bool?
            var kind: String?
            var verbs: [String]?
            var shortNames: [String]?
            var categories: [String]?
        }

        var groupVersion: String?
        var resources: [Resource]
    }

    /// The group versions a legacy `/api` (`APIVersions`) or `/apis` (`APIGroupList`) document names.
    package static func legacyGroupVersions(_ body: ByteBuffer, isCore: Bool) throws -> [(group: String, version: String, preferred: Bool)] {
        if isCore {
            let versions = try JSONDecoder().decode(APIVersions.self, from: body)
            return versions.versions.enumerated().map { ("", $0.element, $0.offset == 0) }
        }
        var targets: [(group: String, version: String, preferred: Bool)] = []
        let groups = try JSONDecoder().decode(APIGroupList.self, from: body)
        for group in groups.groups {
            let preferred = group.preferredVersion?.version ?? group.versions.first?.version
            for version in group.versions {
                targets.append((group.name, version.version, version.version == preferred))
            }
        }
        return targets
    }

    /// The resources of a legacy group version document (`APIResourceList`), subresources left out.
    package static func legacyResources(_ body: ByteBuffer, group: String, version: String, preferred: Bool) throws -> [APIResource] {
        let list = try JSONDecoder().decode(APIResourceList.self, from: body)
        return list.resources.filter { !$0.name.contains("/") }.map { resource in
            APIResource(
                gvr: GroupVersionResource(group: group, version: version, resource: resource.name),
                kind: resource.kind ?? "", singular: resource.singularName ?? "", namespaced: resource.namespaced ?? false,
                verbs: resource.verbs ?? [], shortNames: resource.shortNames ?? [], categories: resource.categories ?? [],
                isPreferredVersion: preferred)
        }
    }

    func legacy(_ body: ByteBuffer, isCore: Bool) async throws -> ([APIResource], [DiscoveryFailure]) {
        let targets: [(group: String, version: String, preferred: Bool)]
        do {
            targets = try Self.legacyGroupVersions(body, isCore: isCore)
        } catch {
            throw KubeAPIError(code: .malformedResponse, message: "discovery document is not valid: \(error)",
                               request: "GET \(configuration.server)\(isCore ? "/api" : "/apis")")
        }
        return await withTaskGroup(of: ([APIResource], DiscoveryFailure?).self) { tasks in
            var pending = targets[...]
            var resources: [APIResource] = []
            var failures: [DiscoveryFailure] = []
            func launch() {
                guard let target = pending.popFirst() else { return }
                tasks.addTask {
                    let path = target.group.isEmpty ? "/api/\(target.version)" : "/apis/\(target.group)/\(target.version)"
                    let groupVersion = target.group.isEmpty ? target.version : "\(target.group)/\(target.version)"
                    do {
                        let response = try await self.send(method: .GET, path: path)
                        return (try Self.legacyResources(response.body, group: target.group, version: target.version, preferred: target.preferred), nil)
                    } catch {
                        return ([], DiscoveryFailure(groupVersion: groupVersion, message: "\(error)"))
                    }
                }
            }
            // A handful at a time: a cluster has dozens of group versions.
            for _ in 0..<8 { launch() }
            for await (found, failure) in tasks {
                resources += found
                if let failure { failures.append(failure) }
                launch()
            }
            return (resources, failures)
        }
    }
}
