import ArgumentParser
import BridgeApp
import Foundation

struct RBAC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rbac",
        abstract: "Print the least-privilege ClusterRole (and its binding) that a configuration needs.",
        discussion: """
            get, list and watch on exactly the groups and resources that resources.include \
            selects, list and watch on CustomResourceDefinitions (their changes start \
            rediscovery), and the discovery endpoints; with leader election or checkpoints in \
            ConfigMaps, a Role for the Lease and the ConfigMaps in kubebridge's namespace. Apply it with:
              kubebridge rbac --config kubebridge.yaml | kubectl apply -f -
            """)

    @Option(name: .long, help: ArgumentHelp("The configuration file (YAML).", valueName: "file"))
    var config: String

    @Option(help: "The ServiceAccount kubebridge runs as.")
    var serviceAccount = "kubebridge"

    @Option(help: "The ServiceAccount's namespace.")
    var namespace = "kubebridge"

    @Option(help: "The name of the ClusterRole and its binding.")
    var name = "kubebridge"

    func run() async throws {
        let configuration = try loadConfiguration(config)
        print(ClusterRolePlan(configuration: configuration).yaml(name: name, serviceAccount: serviceAccount, namespace: namespace), terminator: "")
    }
}
