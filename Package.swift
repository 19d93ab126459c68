// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "Bulkhead",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "bulkhead", targets: ["bulkhead"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // C libraries. Only BulkheadYAML imports CYAML; only BulkheadNetfilter imports CNetfilter.
        .systemLibrary(
            name: "CYAML",
            pkgConfig: "yaml-0.1",
            providers: [.apt(["libyaml-dev"])]
        ),
        .systemLibrary(
            name: "CNetfilter",
            pkgConfig: "libnftnl",
            providers: [.apt(["libnftnl-dev", "libmnl-dev"])]
        ),
        // Kernel and libnftnl macros, wrapped as functions so Swift never re-derives them.
        .target(name: "CNetfilterShim", dependencies: ["CNetfilter"]),
        // Entering a network namespace (setns through the shim): the netlink sockets and the lab's.
        .target(name: "BulkheadNamespace", dependencies: ["CNetfilterShim"]),

        // Escaping for every byte that leaves the process (terminal, workflow commands, JSON,
        // Prometheus labels, logs): one owner per destination, no dependencies.
        .target(name: "BulkheadEscaping"),
        .target(name: "BulkheadYAML", dependencies: ["CYAML"]),
        // IP addresses and prefixes, both families and each one alone: the one address model of
        // the inventory and the ruleset model (both re-export it). No dependencies.
        .target(name: "BulkheadAddress"),
        .target(name: "BulkheadInventory", dependencies: ["BulkheadYAML", "BulkheadAddress"]),
        .target(name: "BulkheadPolicy", dependencies: ["BulkheadYAML", "BulkheadInventory"]),
        .target(name: "BulkheadRuleset", dependencies: ["BulkheadAddress"]),
        // The names and rule comments of our tables, built and parsed in one place (`TableLayout`).
        .target(name: "BulkheadLayout", dependencies: ["BulkheadPolicy", "BulkheadRuleset"]),
        // Connection tracking as a model, a protocol and a fake; the netlink side is in BulkheadNetfilter.
        .target(name: "BulkheadConntrack", dependencies: ["BulkheadInventory"]),
        .target(name: "BulkheadCompiler", dependencies: ["BulkheadPolicy", "BulkheadInventory", "BulkheadRuleset", "BulkheadLayout"]),
        // Container sources behind one protocol (`ContainerSource`, `SourceEvent`), the endpoint
        // index, and the watched inventory file; Docker implements the protocol in BulkheadDocker.
        .target(name: "BulkheadSource", dependencies: ["BulkheadInventory"]),
        .target(name: "BulkheadDocker", dependencies: [
            "BulkheadInventory", "BulkheadEscaping", "BulkheadSource",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        .target(name: "BulkheadEngine", dependencies: ["BulkheadPolicy", "BulkheadInventory", "BulkheadCompiler", "BulkheadRuleset", "BulkheadLayout", "BulkheadConntrack", "BulkheadSource"]),
        .target(name: "BulkheadAgent", dependencies: [
            "BulkheadEngine", "BulkheadDocker", "BulkheadSource", "BulkheadPolicy", "BulkheadInventory", "BulkheadCompiler", "BulkheadRuleset",
            "BulkheadEscaping", "BulkheadLayout", "BulkheadConntrack",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        .target(name: "BulkheadLab", dependencies: ["BulkheadInventory", "BulkheadPolicy", "BulkheadNamespace"]),
        .target(name: "BulkheadNetfilter", dependencies: ["BulkheadRuleset", "BulkheadInventory", "BulkheadConntrack", "BulkheadNamespace", "CNetfilter", "CNetfilterShim"]),
        .executableTarget(
            name: "bulkhead",
            dependencies: [
                "BulkheadPolicy", "BulkheadInventory", "BulkheadYAML", "BulkheadCompiler", "BulkheadEngine",
                "BulkheadRuleset", "BulkheadNetfilter", "BulkheadLab", "BulkheadDocker", "BulkheadSource", "BulkheadAgent", "BulkheadEscaping",
                "BulkheadConntrack",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),

        // Child processes started with a clean signal setup (empty mask, default actions): the
        // benchmark's children, the agent process and commands of the Docker tests.
        .target(name: "BulkheadSpawn"),

        // Shared by the kernel tests: commands, throwaway network namespaces, the root check.
        .target(name: "BulkheadTestSupport", dependencies: ["BulkheadInventory"], path: "Tests/Support"),
        // Benchmarks driven by scripts/bench.sh; never run as a test.
        .executableTarget(name: "bulkhead-bench", dependencies: [
            "BulkheadRuleset", "BulkheadNetfilter", "BulkheadCompiler", "BulkheadEngine", "BulkheadPolicy",
            "BulkheadInventory", "BulkheadLab", "BulkheadAgent", "BulkheadDocker", "BulkheadLayout", "BulkheadSource", "BulkheadSpawn",
        ]),

        // libFuzzer targets (scripts/fuzz.sh builds them with -sanitize=fuzzer,address -DFUZZING);
        // the ordinary build compiles the same targets into a replayer, so they never rot.
        .executableTarget(name: "bulkhead-fuzz", dependencies: [
            "BulkheadPolicy", "BulkheadInventory", "BulkheadCompiler", "BulkheadRuleset", "BulkheadNetfilter",
            "BulkheadDocker", "BulkheadSource", "BulkheadAgent", "BulkheadLayout",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),

        .testTarget(name: "BulkheadPolicyTests", dependencies: ["BulkheadPolicy", "BulkheadInventory", "BulkheadYAML", "BulkheadEngine", "BulkheadCompiler"]),
        .testTarget(name: "BulkheadRulesetTests", dependencies: ["BulkheadRuleset", "BulkheadTestSupport"]),
        // The compiler, policy and engine are here for `FakeVersusKernelTests` (the fake and the kernel
        // fed the compiler's output).
        .testTarget(name: "BulkheadNetfilterTests", dependencies: [
            "BulkheadNetfilter", "BulkheadRuleset", "BulkheadTestSupport",
            "BulkheadCompiler", "BulkheadEngine", "BulkheadPolicy", "BulkheadInventory", "BulkheadConntrack",
        ]),
        .testTarget(name: "BulkheadCLITests", dependencies: ["bulkhead", "BulkheadNetfilter", "BulkheadRuleset", "BulkheadTestSupport", "BulkheadConntrack", "BulkheadLab", "BulkheadInventory"]),
        .testTarget(name: "BulkheadCompilerTests", dependencies: ["BulkheadCompiler", "BulkheadLayout", "BulkheadPolicy", "BulkheadInventory", "BulkheadRuleset", "BulkheadTestSupport", "BulkheadEngine"]),
        .testTarget(name: "BulkheadEngineTests", dependencies: ["BulkheadEngine", "BulkheadConntrack", "BulkheadCompiler", "BulkheadLayout", "BulkheadPolicy", "BulkheadInventory", "BulkheadRuleset", "BulkheadSource", "BulkheadNetfilter", "BulkheadTestSupport"]),
        .testTarget(name: "BulkheadDockerTests", dependencies: ["BulkheadDocker", "BulkheadSource", "BulkheadInventory", "BulkheadTestSupport"]),
        .testTarget(name: "BulkheadSourceTests", dependencies: ["BulkheadSource", "BulkheadInventory", "BulkheadPolicy"]),
        .testTarget(name: "BulkheadAgentTests", dependencies: ["BulkheadAgent", "BulkheadLayout", "BulkheadConntrack", "BulkheadEscaping", "BulkheadDocker", "BulkheadSource", "BulkheadLab", "BulkheadEngine", "BulkheadPolicy", "BulkheadInventory", "BulkheadRuleset", "BulkheadNetfilter", "BulkheadTestSupport"]),
        .testTarget(name: "BulkheadEnforcementTests", dependencies: [
            "BulkheadLab", "BulkheadEngine", "BulkheadNetfilter", "BulkheadCompiler", "BulkheadPolicy",
            "BulkheadInventory", "BulkheadRuleset", "BulkheadTestSupport", "BulkheadLayout", "BulkheadConntrack",
        ]),
        .testTarget(name: "BulkheadAgentDockerTests", dependencies: [
            "BulkheadAgent", "BulkheadDocker", "BulkheadSource", "BulkheadNetfilter", "BulkheadEngine", "BulkheadPolicy", "BulkheadCompiler", "BulkheadLab", "BulkheadLayout",
            "BulkheadInventory", "BulkheadRuleset", "BulkheadTestSupport", "BulkheadSpawn",
        ]),
        .testTarget(name: "BulkheadSpawnTests", dependencies: ["BulkheadSpawn"]),
        .testTarget(name: "BulkheadAddressTests", dependencies: ["BulkheadAddress"]),
        .testTarget(name: "BulkheadNamespaceTests", dependencies: ["BulkheadNamespace", "BulkheadTestSupport"]),
        .testTarget(name: "BulkheadLabTests", dependencies: ["BulkheadLab", "BulkheadInventory", "BulkheadPolicy"]),
    ]
)
