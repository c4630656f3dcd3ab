// swift-tools-version:6.2
import PackageDescription

let package = Package(
    name: "netdiskfs",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "netdiskfs", targets: ["NetdiskMain"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // libfuse3 headers through pkg-config; the shim wraps fuse_main (a macro Swift cannot call).
        .systemLibrary(name: "CFuse", path: "Sources/CFuse", pkgConfig: "fuse3",
                       providers: [.apt(["libfuse3-dev"])]),
        .target(name: "CFuseShim", dependencies: ["CFuse"]),
        // libcurl; the shim wraps the variadic curl_easy_setopt/getinfo.
        .systemLibrary(name: "CCurl", path: "Sources/CCurl", pkgConfig: "libcurl",
                       providers: [.apt(["libcurl4-openssl-dev"])]),
        .target(name: "CCurlShim", dependencies: ["CCurl"]),
        // libcrypto's MD5: the client's hash must run at the `openssl md5` floor.
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "libcrypto",
                       providers: [.apt(["libssl-dev"])]),

        // libqrencode draws the login QR code in the terminal.
        .systemLibrary(name: "CQRencode", path: "Sources/CQRencode", pkgConfig: "libqrencode",
                       providers: [.apt(["libqrencode-dev"])]),

        // The engine and Baidu client. No FUSE knowledge.
        .target(name: "Uploader", dependencies: [
            "CCurlShim", "COpenSSL",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "GRDB", package: "GRDB.swift"),
        ]),
        // The Baidu-compatible server. Shares no code with the client.
        .target(name: "NetdiskEmulator", dependencies: [
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // FUSE adapter, filesystem logic and the CLI.
        .target(name: "NetdiskFS", dependencies: [
            "CFuseShim", "Uploader", "NetdiskEmulator", "CQRencode",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "NetdiskMain", dependencies: ["NetdiskFS"]),
        // The Baidu client and account commands against the real emulator.
        .testTarget(name: "ClientTests", dependencies: ["Uploader", "NetdiskEmulator", "NetdiskFS"]),
        .testTarget(name: "EmulatorTests", dependencies: [
            "NetdiskEmulator",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Real-mount tests: spawn the built `netdiskfs` against an in-process emulator.
        .testTarget(name: "MountTests", dependencies: ["NetdiskFS", "NetdiskEmulator", "Uploader"]),
        // Engine tests: unit tests on a fault-injecting double, end-to-end against the emulator.
        .testTarget(name: "EngineTests", dependencies: ["Uploader", "NetdiskFS", "NetdiskEmulator"]),

    ]
)
