// swift-tools-version: 6.1
// Granary: one target per layer of ../shared/DESIGN.md; each depends only downward.
import PackageDescription

let package = Package(
    name: "Granary",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "granary", targets: ["GranaryCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", exact: "2.101.3"),
        .package(url: "https://github.com/groue/GRDB.swift", exact: "7.10.0"),
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
    ],
    targets: [
        // C libraries, found through pkg-config.
        .systemLibrary(name: "CFuse3", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        .systemLibrary(name: "CSodium", pkgConfig: "libsodium", providers: [.apt(["libsodium-dev"])]),
        .systemLibrary(name: "CISAL", pkgConfig: "libisal", providers: [.apt(["libisal-dev"])]),
        // Variadic or macro-only C calls Swift cannot import (prctl, ...).
        .target(name: "CGranaryShim"),
        // Granary's reads and writes of /dev/fuse (libfuse custom I/O), for a
        // kernel feature libfuse 3.14 cannot negotiate.
        .target(name: "CFuseChannel", dependencies: ["CFuse3"]),
        // BLAKE3 (vendored C, see its README): the bulk-data hash.
        .target(name: "CBlake3", exclude: ["LICENSE", "README.md"],
                cSettings: [.define("BLAKE3_USE_NEON", to: "0")]),

        // Identities, AEAD, hashing, key derivation, erasure code, Merkle trees.
        .target(name: "GranaryCore", dependencies: [
            "CSodium", "CISAL", "CGranaryShim", "CBlake3",
        ]),
        // SQLite files with versioned schemas: older files migrate, newer ones are refused.
        .target(name: "GranaryDatabase", dependencies: [
            .product(name: "GRDB", package: "GRDB.swift"),
        ]),
        // Protocol messages (protobuf) and framed, authenticated TCP/UDP.
        .target(name: "GranaryWire", dependencies: [
            "GranaryCore", "CSodium", "CGranaryShim",
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Contracts, audit proofs, payment vouchers.
        .target(name: "GranaryContracts", dependencies: ["GranaryCore", "GranaryWire"]),
        // Kademlia node and pub/sub of contract offers.
        .target(name: "GranaryDHT", dependencies: [
            "GranaryDatabase", "GranaryCore", "GranaryWire", "GranaryContracts",
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The farmer: piece store and the contract/audit/payment side.
        .target(name: "GranaryFarmer", dependencies: [
            "GranaryDatabase", "GranaryCore", "GranaryWire", "GranaryContracts", "GranaryDHT",
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The renter engine: segments <-> pieces on farmers (network.db).
        .target(name: "GranaryRenter", dependencies: [
            "GranaryDatabase", "GranaryCore", "GranaryWire", "GranaryContracts", "GranaryDHT",
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // File metadata (meta.db), write-back cache, chunk sealing, segment packing.
        .target(name: "GranaryStore", dependencies: [
            "GranaryDatabase", "GranaryCore", "GranaryRenter", "CGranaryShim",
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // FUSE low-level adapter.
        .target(name: "GranaryFS", dependencies: [
            "CFuse3", "CFuseChannel", "CGranaryShim", "GranaryStore",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The `granary` executable.
        .executableTarget(name: "GranaryCLI", dependencies: [
            "GranaryCore", "GranaryWire", "GranaryContracts", "GranaryDHT",
            "GranaryFarmer", "GranaryRenter", "GranaryStore", "GranaryFS", "CGranaryShim",
            "CSodium", "CISAL",  // raw C baselines for `granary bench`
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        // Test helpers: child processes with time limits, temporary folders.
        .target(name: "GranaryTestSupport", dependencies: ["GranaryCore"], path: "Tests/Support"),

        .testTarget(name: "GranaryCoreTests", dependencies: ["GranaryCore"]),
        .testTarget(name: "GranaryFarmerTests", dependencies: [
            "GranaryCore", "GranaryWire", "GranaryContracts", "GranaryFarmer", "GranaryTestSupport",
            .product(name: "NIOCore", package: "swift-nio")]),
        .testTarget(name: "GranaryDHTTests", dependencies: [
            "GranaryCore", "GranaryWire", "GranaryContracts", "GranaryDHT", "GranaryTestSupport",
            .product(name: "GRDB", package: "GRDB.swift")]),
        .testTarget(name: "GranaryRenterTests", dependencies: [
            "GranaryCore", "GranaryWire", "GranaryContracts", "GranaryDHT", "GranaryRenter", "GranaryTestSupport"]),
        .testTarget(name: "GranaryMountTests", dependencies: [
            "GranaryCore", "GranaryDatabase", "GranaryRenter", "GranaryStore", "GranaryFS", "GranaryTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
