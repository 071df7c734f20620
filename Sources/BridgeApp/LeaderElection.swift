import Foundation
import KubeAPI
import KubeModel
import Logging

/// Who may bridge: the holder of a coordination.k8s.io/v1 Lease, with client-go's leader
/// election semantics. A candidate takes the lease when its holder has not renewed it for
/// `leaseDuration`, measured on the candidate's own clock from when it last saw the lease change
/// (so clocks need not agree); the leader renews every `retryPeriod`, and gives up if it could
/// not renew for `renewDeadline`.
public struct LeaderElectionOptions: Sendable {
    public var namespace: String
    public var name = "kubebridge"
    public var identity: String
    public var leaseDuration: Duration = .seconds(15)
    public var renewDeadline: Duration = .seconds(10)
    public var retryPeriod: Duration = .seconds(2)

    public init(namespace: String, identity: String) {
        self.namespace = namespace
        self.identity = identity
    }

    /// `POD_NAME` in a pod (from the downward API), else the host name and the process id.
    public static var defaultIdentity: String {
        if let pod = ProcessInfo.processInfo.environment["POD_NAME"], !pod.isEmpty { return pod }
        return "\(ProcessInfo.processInfo.hostName)-\(getpid())"
    }

    /// `POD_NAMESPACE`, else the service account's namespace, else `default`.
    public static var defaultNamespace: String {
        if let namespace = ProcessInfo.processInfo.environment["POD_NAMESPACE"], !namespace.isEmpty { return namespace }
        if let data = FileManager.default.contents(atPath: "/var/run/secrets/kubernetes.io/serviceaccount/namespace"),
           let namespace = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines), !namespace.isEmpty {
            return namespace
        }
        return "default"
    }

    func validate() throws {
        guard leaseDuration > renewDeadline, renewDeadline > retryPeriod, retryPeriod > .zero else {
            throw ConfigurationError(problems: ["leaderElection: leaseDuration must be longer than renewDeadline, and renewDeadline longer than retryPeriod"])
        }
    }
}

/// The lease was lost: another replica may be bridging already, so this one must stop at once.
public struct LeadershipLost: Error, CustomStringConvertible {
    public var lease: String
    public var description: String { "lost the lease \(lease): another replica may lead now; kubebridge stops at once" }
}

public actor LeaderElector {
    public let options: LeaderElectionOptions
    let client: KubeClient
    let logger: Logger

    struct Record: Equatable {
        var holder: String
        var leaseDurationSeconds: Int
        var acquireTime: String?
        var renewTime: String?
        var transitions: Int
    }

    /// The lease as last seen, and when (on this replica's clock) it was seen to change.
    private var observed: (record: Record, at: Duration)?
    private var resourceVersion: String?
    public private(set) var isLeader = false

    static let leases = GroupVersionResource(group: "coordination.k8s.io", version: "v1", resource: "leases")

    /// This replica's clock: expiry is measured on it, never on the lease's timestamps, so
    /// replicas' clocks need not agree.
    private let clock: Timekeeper

    public init<C: Clock>(client: KubeClient, options: LeaderElectionOptions, clock: C = ContinuousClock(), logger: Logger) throws
    where C.Duration == Duration {
        try options.validate()
        self.client = client
        self.options = options
        self.logger = logger
        self.clock = Timekeeper(clock)
    }

    var leaseName: String { "\(options.namespace)/\(options.name)" }

    /// Returns once this replica holds the lease; throws when cancelled.
    public func acquire() async throws {
        var reported: String?
        while true {
            try Task.checkCancellation()
            do {
                if try await tryAcquireOrRenew() {
                    isLeader = true
                    logger.info("leading: holding the lease \(leaseName) as \(options.identity)")
                    return
                }
                if let holder = observed?.record.holder, holder != reported {
                    logger.info("standing by: the lease \(leaseName) is held by \(holder)")
                    reported = holder
                }
            } catch let error as KubeAPIError {
                logger.warning("the lease \(leaseName) cannot be read or written: \(error)")
            }
            try await clock.sleep(jittered(options.retryPeriod))
        }
    }

    /// Renews every `retryPeriod` until cancelled (then returns); throws `LeadershipLost` when it
    /// could not renew for `renewDeadline`.
    public func hold() async throws {
        var renewed = clock.now()
        while true {
            do {
                try await clock.sleep(options.retryPeriod)
            } catch {
                return
            }
            var succeeded = false
            do {
                // A renewal that has started completes, even when the shutdown cancels this loop: a
                // write given up after it was sent still lands, and the release that follows would
                // then conflict with it and leave the lease held for its whole duration.
                succeeded = try await Task { try await self.tryAcquireOrRenew() }.value
            } catch {
                logger.warning("renewing the lease \(leaseName) failed: \(error)")
            }
            if succeeded {
                renewed = clock.now()
            } else if clock.now() - renewed >= options.renewDeadline {
                isLeader = false
                throw LeadershipLost(lease: leaseName)
            }
        }
    }

    /// Gives the lease up, so that a successor need not wait out `leaseDuration`.
    public func release() async {
        guard isLeader, let observed else { return }
        isLeader = false
        var record = observed.record
        record.holder = ""
        record.leaseDurationSeconds = 1
        let now = Timestamp.rfc3339(Date(), fractionDigits: 6)
        record.acquireTime = now
        record.renewTime = now
        do {
            // In a task of its own: it runs at shutdown, whose cancellation would give the write up.
            let (client, namespace, name, json) = (client, options.namespace, options.name, try body(record))
            _ = try await Task { try await client.replace(Self.leases, namespace: namespace, name: name, json: json) }.value
            logger.info("released the lease \(leaseName)")
        } catch {
            logger.warning("releasing the lease \(leaseName) failed: \(error); a successor takes it after \(options.leaseDuration.spoken)")
        }
    }

    /// client-go's tryAcquireOrRenew: true when this replica holds the lease afterwards.
    func tryAcquireOrRenew() async throws -> Bool {
        let now = Timestamp.rfc3339(Date(), fractionDigits: 6)
        let seconds = Int(options.leaseDuration.components.seconds)
        let current: Record
        do {
            let object = try await client.get(Self.leases, namespace: options.namespace, name: options.name)
            resourceVersion = object.metadata.resourceVersion
            current = try Self.record(object)
        } catch let error as KubeAPIError where error.isNotFound {
            let record = Record(holder: options.identity, leaseDurationSeconds: seconds, acquireTime: now, renewTime: now, transitions: 0)
            resourceVersion = nil
            do {
                let created = try await client.create(Self.leases, namespace: options.namespace, json: body(record))
                resourceVersion = created.metadata.resourceVersion
                observed = (record, clock.now())
                return true
            } catch let error as KubeAPIError where error.isConflict {
                return false
            }
        }
        if observed?.record != current { observed = (current, clock.now()) }
        let heldByOther = !current.holder.isEmpty && current.holder != options.identity
        if heldByOther, let observed, clock.now() - observed.at < .seconds(max(current.leaseDurationSeconds, 1)) {
            return false
        }
        var next = current
        if current.holder != options.identity {
            next.acquireTime = now
            next.transitions = current.transitions + 1
        }
        next.holder = options.identity
        next.leaseDurationSeconds = seconds
        next.renewTime = now
        do {
            let written = try await client.replace(Self.leases, namespace: options.namespace, name: options.name, json: body(next))
            resourceVersion = written.metadata.resourceVersion
            observed = (next, clock.now())
            return true
        } catch let error as KubeAPIError where error.isConflict {
            return false
        }
    }

    private func body(_ record: Record) throws -> String {
        var metadata: [String: Any] = ["name": options.name, "namespace": options.namespace]
        if let resourceVersion { metadata["resourceVersion"] = resourceVersion }
        var spec: [String: Any] = ["holderIdentity": record.holder, "leaseDurationSeconds": record.leaseDurationSeconds,
                                   "leaseTransitions": record.transitions]
        if let acquireTime = record.acquireTime { spec["acquireTime"] = acquireTime }
        if let renewTime = record.renewTime { spec["renewTime"] = renewTime }
        let object: [String: Any] = ["apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec]
        return String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }

    static func record(_ object: KubeObject) throws -> Record {
        let json = try JSONSerialization.jsonObject(with: Data(object.bytes.readableBytesView)) as? [String: Any]
        let spec = json?["spec"] as? [String: Any] ?? [:]
        return Record(holder: spec["holderIdentity"] as? String ?? "", leaseDurationSeconds: spec["leaseDurationSeconds"] as? Int ?? 15,
                      acquireTime: spec["acquireTime"] as? String, renewTime: spec["renewTime"] as? String,
                      transitions: spec["leaseTransitions"] as? Int ?? 0)
    }

    /// client-go's JitterFactor 1.2 for candidates: up to 20% longer, so candidates do not retry in step.
    private func jittered(_ duration: Duration) -> Duration {
        duration * Double.random(in: 1.0...1.2)
    }
}
