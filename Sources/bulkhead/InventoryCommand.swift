import ArgumentParser
import BulkheadDocker
import BulkheadInventory

struct InventoryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inventory",
        abstract: "Print the live container metadata from Docker as an inventory snapshot (for --inventory, CI and offline plans).",
        discussion: "Exit codes: 0 printed; 1 Docker cannot be read; 64 usage (also: a --docker that is not unix:///path)."
    )

    @Option(help: "Docker Engine API socket (unix:///path).")
    var docker: String = "unix://" + DockerEndpoint.defaultSocketPath

    func run() throws {
        do {
            let inventory = try Inputs.dockerInventory(docker)
            print(InventorySnapshot.render(inventory, header: "bulkhead inventory: \(inventory.containers.count) containers on \(inventory.networks.count) networks"), terminator: "")
        } catch let r as Reported {
            throw ExitCode(r.status)
        }
    }
}
