import ArgumentParser
import BulkheadEscaping
import BulkheadInventory
import BulkheadPolicy
import BulkheadYAML

struct ExplainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain",
        abstract: "Say whether a connection is allowed, and by which policy line.",
        discussion: """
        A and B are a container name, a service (segment/name), an IP address, or host.
        Example: bulkhead explain --inventory policies/inventory.json --from shop-api-1 --to shop/db --port tcp/5432

        Exit codes: 0 a verdict (allowed, denied, audited or ungoverned); 1 a service with no container,
        a container without an address of the family asked, or an error; 64 usage (also: an unknown name);
        66 unreadable input.
        """
    )

    @OptionGroup var source: SourceOptions

    @Option(help: "The source: container name, segment/service, IP address or host.")
    var from: String

    @Option(help: "The destination: container name, segment/service, IP address or host.")
    var to: String

    @Option(help: "tcp/N, udp/N or icmp.")
    var port: String

    @Flag(help: "Use the containers' IPv6 addresses (default: IPv4).")
    var ipv6 = false

    @Option(help: "Output format: text or json.")
    var format: PlanCommand.Format = .text

    func validate() throws {
        if Traffic(port) == nil {
            throw ValidationError("--port must be tcp/N, udp/N or icmp (one port), not '\(port)'")
        }
    }

    func run() throws {
        do {
            let policies = try Inputs.policies(source)
            let inventory = try Inputs.inventory(source)
            let evaluator = Evaluator(policies: policies, inventory: inventory)
            let a = try party(from, "--from", evaluator)
            let b = try party(to, "--to", evaluator)
            let decision = evaluator.evaluate(from: a.party, to: b.party, Traffic(port)!)
            if format == .json {
                print(JSONValue.object([
                    ("from", .string(a.label)), ("to", .string(b.label)), ("port", .string(port)),
                    ("verdict", .string(decision.verdict.rawValue)),
                    ("flow", decision.flow.map { .string($0.reference) } ?? .null),
                    ("source", .string(decision.source.description)),
                    ("destination", .string(decision.destination.description)),
                    ("reason", .string(decision.reason)),
                ]).render())
            } else {
                // Each value may quote a label, a container name or a flow's description: one line each.
                print(Escape.terminal("\(a.label) -> \(b.label) \(port): \(decision.verdict.rawValue.uppercased())"))
                print("  source:      \(Escape.terminal("\(decision.source)"))")
                print("  destination: \(Escape.terminal("\(decision.destination)"))")
                print("  reason:      \(Escape.terminal("\(decision.reason)"))")
                if let flow = decision.flow, let text = flow.description { print("  flow:        \(Escape.terminal(text))") }
            }
        } catch let r as Reported {
            throw ExitCode(r.status)
        }
    }

    struct Resolved {
        var party: Evaluator.Party
        var label: String
    }

    func party(_ text: String, _ option: String, _ evaluator: Evaluator) throws -> Resolved {
        if text == "host" { return Resolved(party: .host, label: "host") }
        if let ip = IPAddress(text) { return Resolved(party: .address(ip), label: text) }
        let inventory = evaluator.inventory
        func address(of c: Container) throws -> Resolved {
            guard let a = c.addresses.first(where: { $0.isIPv4 != ipv6 }) else {
                Inputs.printError("\(option): container \(c.name) has no IPv\(ipv6 ? 6 : 4) address")
                throw Reported(status: ExitStatus.failure)
            }
            return Resolved(party: .address(a), label: "\(c.name) (\(a))")
        }
        if let c = inventory.containers.first(where: { $0.name == text }) { return try address(of: c) }
        let parts = text.split(separator: "/").map(String.init)
        if parts.count == 2, evaluator.policies.service(ServiceRef(segment: parts[0], name: parts[1])) != nil {
            let ref = ServiceRef(segment: parts[0], name: parts[1])
            guard let c = inventory.containers.sorted(by: { $0.name < $1.name }).first(where: { evaluator.membership[$0.name]?.contains(ref) == true }) else {
                Inputs.printError("\(option): service \(text) has no container in the inventory to explain with")
                throw Reported(status: ExitStatus.failure)
            }
            return try address(of: c)
        }
        var message = "\(option): '\(text)' is not a container, a service (segment/name), an IP address or host"
        if let guess = Spelling.closest(to: text, among: inventory.containers.map(\.name)) { message += " (did you mean '\(guess)'?)" }
        Inputs.printError(message)
        throw Reported(status: ExitStatus.usage)
    }
}
