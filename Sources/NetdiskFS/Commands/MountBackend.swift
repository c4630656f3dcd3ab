import Foundation
import Logging
import Uploader

/// The cloud client and the upload engine a mount runs on.
struct MountBackend: Sendable {
    struct Options: Sendable {
        var emulator = false
        var emulatorURL: String?
        var endpoint: String?
        var cacheDirectory: String?
        var configDirectory: String?
        var root: String?
        var maxMemory: Int?
    }

    struct Unavailable: Error, CustomStringConvertible {
        var description: String
    }

    let api: any NetdiskAPI
    let writers: any WriteSessionFactory
    let remoteRoot: String
    let emulatorURL: String?
    let shutdown: @Sendable () async -> Void

    static func make(options: Options, logger: Logger) async throws -> MountBackend {
        throw Unavailable(description: "the Baidu client is not built into this version yet")
    }
}
