import Foundation

/// Tries one streaming strategy end to end on a scratch file, exactly as the engine would use it.
///
/// Why a probe and not a guess: the calls that may be refused come at both ends. A precreate can
/// be refused up front, which costs nothing, but a create that insists on precreate's size comes
/// only after every part was sent, when a stream's bytes are gone from memory. So a strategy is
/// trusted only after a 2-part file (4 MiB and 1 byte, more parts than precreate declared, a true
/// size other than the provisional one) went through it and read back at the right size.
public struct StreamingStrategyProbe: Sendable {
    public let api: any NetdiskAPI
    /// Where probe files are made (the staging directory); each is deleted after its probe.
    public let scratchDirectory: String

    public init(api: any NetdiskAPI, scratchDirectory: String) {
        self.api = api
        self.scratchDirectory = scratchDirectory
    }

    /// The probe's part size: the smallest every tier accepts for a multi-part file.
    static let partSize = BaiduProtocol.minFirstPartSize

    /// nil when `strategy` works on this account; otherwise the error that refused it.
    public func run(_ strategy: StreamingStrategy) async -> NetdiskError? {
        guard strategy != .none else { return nil }
        let path = (scratchDirectory == "/" ? "" : scratchDirectory) + "/probe-" + StagingOwner.current.fileName()
        let size = Self.partSize + 1
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
        defer { memory.deallocate() }
        // Random bytes: a probe must never be answered from content the server already holds.
        var generator = SystemRandomNumberGenerator()
        for offset in stride(from: 0, to: size - 7, by: 8) {
            memory.storeBytes(of: generator.next() as UInt64, toByteOffset: offset, as: UInt64.self)
        }
        memory[size - 1] = UInt8.random(in: 0...255, using: &generator)
        let parts = [UnsafeRawBufferPointer(rebasing: memory[0..<Self.partSize]),
                     UnsafeRawBufferPointer(rebasing: memory[Self.partSize..<size])]
        let expected = parts.map { MD5Hasher.hex(of: $0) }
        do throws(NetdiskError) {
            let uploadID = try await api.precreateStreaming(path: path, strategy: strategy,
                                                            provisionalSize: Int64(Self.partSize), policy: .overwrite)
            var received: [String] = []
            for (partseq, part) in parts.enumerated() {
                let md5 = try await api.uploadPart(path: path, uploadID: uploadID, partseq: partseq,
                                                   bytes: PartBytes(base: part.baseAddress, count: part.count))
                guard md5.lowercased() == expected[partseq] else {
                    throw NetdiskError.partChecksumMismatch(partseq: partseq, expected: expected[partseq], received: md5)
                }
                received.append(md5.lowercased())
            }
            let entry = try await api.create(path: path, size: Int64(size), uploadID: uploadID, blockList: received,
                                             localMtime: nil, policy: .overwrite)
            try? await api.delete(paths: [path])
            guard entry.size == Int64(size) else {
                return .protocolViolation("create answered size \(entry.size) for a \(size)-byte probe")
            }
            return nil
        } catch {
            return error
        }
    }
}
