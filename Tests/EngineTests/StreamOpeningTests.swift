import Foundation
import Testing
@testable import Uploader

/// The streaming precreate runs beside the writer: a long round trip no longer stops the writes
/// that fill the window, and every byte still goes out in order once it answers.
@Suite struct StreamOpeningTests {
    @Test(.timeLimit(.minutes(1))) func writesFillTheWindowWhileThePrecreateRuns() async throws {
        let api = FakeNetdisk()
        api.setFaults { $0.streamingPrecreateDelay = 1.5 }
        let options = testOptions(threads: 3, window: 2)
        let session = FileWriteSession(api: api, remotePath: "/slow-precreate", mode: .streaming, options: options,
                                       budget: MemoryBudget(bytes: 64 * testSlice), logger: testLogger)
        let data = SplitMix.bytes(9 * testSlice + 123, seed: 31)
        let window = 4 * testSlice   // within the window as it stands while the precreate runs (2 + 3 slices)
        let seconds = try await onForeignThread { () throws(NetdiskError) -> Double in
            let started = Date()
            try writeAll(session, Array(data[0..<window]), chunk: 10_000)
            return Date().timeIntervalSince(started)
        }
        #expect(seconds < 1.0, "writes waited \(seconds) s for a 1.5 s precreate")
        #expect(api.partsReceived == 0, "nothing is sent before the precreate answers")
        let entry = try await onForeignThread { () throws(NetdiskError) -> RemoteEntry in
            var offset = window
            while offset < data.count {
                let n = min(10_000, data.count - offset)
                try session.write(data[offset..<offset + n], at: Int64(offset))
                offset += n
            }
            #expect(!session.isCached, "a slow precreate is no reason to take the cached path")
            return try session.finish()
        }
        #expect(entry.size == Int64(data.count))
        #expect(api.content("/slow-precreate") == data)
        #expect(api.streamingPrecreates == 1 && api.knownContentPrecreates == 0)
        #expect(api.partsReceived == 10)
    }

    /// A file that fills its first part and is closed while the precreate runs still streams:
    /// the commit waits for the precreate instead of uploading the window afresh.
    @Test(.timeLimit(.minutes(1))) func aCloseDuringThePrecreateWaitsForIt() async throws {
        let api = FakeNetdisk()
        api.setFaults { $0.streamingPrecreateDelay = 0.5 }
        let session = FileWriteSession(api: api, remotePath: "/two-parts", mode: .streaming, options: testOptions(),
                                       budget: MemoryBudget(bytes: 64 * testSlice), logger: testLogger)
        let data = SplitMix.bytes(testSlice + 5, seed: 32)
        _ = try await onForeignThread { () throws(NetdiskError) -> RemoteEntry in
            try writeAll(session, data)
            return try session.finish()
        }
        #expect(api.content("/two-parts") == data)
        #expect(api.streamingPrecreates == 1 && api.knownContentPrecreates == 0, "the stream's precreate, not a second upload")
        #expect(api.partsReceived == 2)
    }
}
