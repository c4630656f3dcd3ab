import Foundation

/// One row of `netdiskfs selftest`.
public struct SelftestCheck: Sendable, Codable, Equatable {
    public enum Outcome: String, Sendable, Codable { case pass = "PASS", fail = "FAIL", skip = "SKIP" }
    public var check: String
    public var result: Outcome
    /// Baidu's errno (or error_code) when the check failed with one.
    public var errno: Int?
    public var detail: String
    /// The mount cannot work on an account that fails this check.
    public var critical: Bool
}

/// What `netdiskfs selftest` found.
public struct SelftestReport: Sendable, Codable {
    public var checks: [SelftestCheck]
    /// The streaming strategy learned (and recorded for the engine).
    public var streaming: StreamingStrategy
    public var mountCanWork: Bool

    enum CodingKeys: String, CodingKey {
        case checks, streaming
        case mountCanWork = "mount_can_work"
    }
}

/// Checks, on a real account, each belief about Baidu that the client rests on (DESIGN.md research).
///
/// Everything happens in a scratch directory under the remote root, which is deleted at the end
/// whatever happened. The checks that the mount cannot do without (account, mkdir, a multi-part
/// upload, a ranged download, move, delete) are critical; the rest say which path the mount will
/// take (streaming or cached, rapid upload or not, empty files kept locally or not).
public struct AccountSelftest: Sendable {
    public let api: any NetdiskAPI
    public let remoteRoot: String

    public init(api: any NetdiskAPI, remoteRoot: String) {
        self.api = api
        self.remoteRoot = remoteRoot
    }

    public func run(progress: @Sendable (SelftestCheck) -> Void = { _ in }) async -> SelftestReport {
        var checks: [SelftestCheck] = []
        func record(_ check: SelftestCheck) {
            checks.append(check)
            progress(check)
        }
        func pass(_ name: String, _ detail: String, critical: Bool = false) {
            record(SelftestCheck(check: name, result: .pass, errno: nil, detail: detail, critical: critical))
        }
        func fail(_ name: String, _ error: NetdiskError, _ meaning: String = "", critical: Bool = false) {
            let detail = meaning.isEmpty ? "\(error)" : "\(error): \(meaning)"
            record(SelftestCheck(check: name, result: .fail, errno: error.baiduCode, detail: detail, critical: critical))
        }
        func skip(_ name: String, _ why: String, critical: Bool = false) {
            record(SelftestCheck(check: name, result: .skip, errno: nil, detail: why, critical: critical))
        }
        func finish(_ streaming: StreamingStrategy) -> SelftestReport {
            SelftestReport(checks: checks, streaming: streaming,
                           mountCanWork: !checks.contains { $0.critical && $0.result != .pass })
        }

        // Account, tier, quota.
        let account: AccountInfo
        do throws(NetdiskError) {
            account = try await api.accountInfo()
            pass("account and tier", "\(account.name.isEmpty ? "(unnamed)" : account.name), \(account.tier.displayName): slices up to \(account.tier.maxSliceSize >> 20) MiB, files up to \(account.tier.maxFileSize / 1_000_000_000) GB", critical: true)
        } catch {
            fail("account and tier", error, "log in again with `netdiskfs login`", critical: true)
            for name in Self.laterChecks { skip(name, "no account") }
            return finish(.none)
        }
        do throws(NetdiskError) {
            let quota = try await api.quota()
            pass("quota", "\(quota.used) of \(quota.total) bytes used")
        } catch {
            fail("quota", error, "df shows no sizes")
        }

        let scratch = (remoteRoot == "/" ? "" : remoteRoot) + "/.netdiskfs-selftest-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        do throws(NetdiskError) {
            _ = try await api.makeDirectory(path: scratch)
            pass("mkdir", scratch, critical: true)
        } catch {
            fail("mkdir", error, "the remote root \(remoteRoot) cannot be written (uploads are allowed only under /apps/<app name>)",
                 critical: true)
            for name in Self.laterChecks.dropFirst() { skip(name, "no scratch directory") }
            return finish(.none)
        }

        let streaming = await runInScratch(scratch, tier: account.tier, pass: pass, fail: fail, skip: skip)
        do throws(NetdiskError) {
            try await api.delete(paths: [scratch])
            do throws(NetdiskError) {
                _ = try await api.list(directory: scratch, start: 0, limit: 1)
                record(SelftestCheck(check: "delete", result: .fail, errno: nil, detail: "\(scratch) is still listed after delete",
                                     critical: true))
            } catch {
                if case .notFound = error { pass("delete", "the scratch directory is gone", critical: true) }
                else { fail("delete", error, critical: true) }
            }
        } catch {
            fail("delete", error, "delete \(scratch) by hand", critical: true)
        }
        return finish(streaming)
    }

    static let laterChecks = ["mkdir", "multi-part upload with a real block list", "single-part upload", "paging",
                              "rapid upload (precreate with content-md5)", "rapid upload (create)", "empty file",
                              StreamingStrategy.xpanProvisional.checkName, StreamingStrategy.webPlaceholder.checkName,
                              "dlink with Range and User-Agent", "second Range request on a reused connection",
                              "move with ondup", "delete"]

    private func runInScratch(_ scratch: String, tier: AccountTier, pass: (String, String, Bool) -> Void,
                              fail: (String, NetdiskError, String, Bool) -> Void,
                              skip: (String, String, Bool) -> Void) async -> StreamingStrategy {
        // A 2-part file with its real block list: the upload every cached path and `put` do.
        let multi = scratch + "/multi.bin"
        let content = Self.randomBytes(BaiduProtocol.minFirstPartSize + 1000)
        var multiEntry: RemoteEntry?
        do throws(NetdiskError) {
            multiEntry = try await upload(content, to: multi, slice: BaiduProtocol.minFirstPartSize)
            pass("multi-part upload with a real block list", "2 parts, \(content.count) bytes, size read back", true)
        } catch {
            fail("multi-part upload with a real block list", error, "the mount cannot upload", true)
        }
        let small = Self.randomBytes(1024)
        do throws(NetdiskError) {
            _ = try await upload(small, to: scratch + "/small.bin", slice: BaiduProtocol.minFirstPartSize)
            pass("single-part upload", "1 KiB", true)
        } catch {
            fail("single-part upload", error, "the mount cannot upload small files", true)
        }
        do throws(NetdiskError) {
            let first = try await api.list(directory: scratch, start: 0, limit: 1)
            let second = try await api.list(directory: scratch, start: 1, limit: 1)
            if first.count == 1, second.count == 1, first[0].name != second[0].name {
                pass("paging", "start/limit pages are distinct (\(first[0].name), \(second[0].name))", true)
            } else {
                fail("paging", .protocolViolation("pages of one entry gave \(first.map(\.name)) and \(second.map(\.name))"),
                     "listings of large directories would be wrong", true)
            }
        } catch {
            fail("paging", error, "", true)
        }

        // Rapid upload, the form that works (precreate with content-md5) and the one that may not.
        let digest = Self.digest(content, slice: BaiduProtocol.minFirstPartSize)
        do throws(NetdiskError) {
            let result = try await api.precreate(path: scratch + "/rapid.bin", size: Int64(content.count), blockList: digest.blocks,
                                                 contentMD5: digest.content, sliceMD5: digest.slice, localMtime: nil,
                                                 policy: .overwrite)
            if result.rapidHit != nil {
                pass("rapid upload (precreate with content-md5)", "return_type 2: known content is not sent again", false)
            } else {
                fail("rapid upload (precreate with content-md5)", .protocolViolation("no return_type 2 for content the account holds"),
                     "every upload sends its bytes", false)
            }
        } catch {
            fail("rapid upload (precreate with content-md5)", error, "every upload sends its bytes", false)
        }
        do throws(NetdiskError) {
            if try await api.rapidUpload(path: scratch + "/rapid2.bin", size: Int64(content.count), contentMD5: digest.content,
                                         sliceMD5: digest.slice, policy: .overwrite) != nil {
                pass("rapid upload (create)", "create with the content MD5 works too (not used: precreate does it in one call)", false)
            } else {
                fail("rapid upload (create)", .protocolViolation("refused for content the account holds (31079 or 31500)"),
                     "not used: precreate does rapid upload", false)
            }
        } catch {
            fail("rapid upload (create)", error, "not used: precreate does rapid upload", false)
        }

        do throws(NetdiskError) {
            let result = try await api.precreate(path: scratch + "/empty", size: 0, blockList: [BaiduProtocol.emptyMD5],
                                                 contentMD5: BaiduProtocol.emptyMD5, sliceMD5: BaiduProtocol.emptyMD5,
                                                 localMtime: nil, policy: .overwrite)
            if result.rapidHit == nil, let id = result.uploadID {
                _ = try await api.create(path: scratch + "/empty", size: 0, uploadID: id, blockList: [BaiduProtocol.emptyMD5],
                                         localMtime: nil, policy: .overwrite)
            }
            pass("empty file", "0-byte files are stored in the cloud", false)
        } catch {
            fail("empty file", error, "the mount keeps empty files in its local overlay, shown by this machine only", false)
        }

        // Streaming: each strategy as the engine would use it.
        let probe = StreamingStrategyProbe(api: api, scratchDirectory: scratch)
        var learned: StreamingStrategy = .none
        for strategy in StreamingStrategy.probeOrder {
            if let error = await probe.run(strategy) {
                var meaning = learned == .none ? "files cannot stream this way" : "not needed"
                if strategy == .webPlaceholder, case .tokenInvalid = error { meaning = "the web API does not take an OAuth token; " + meaning }
                fail(strategy.checkName, error, meaning, false)
            } else {
                pass(strategy.checkName, "a 2-part stream of unknown size committed at its true size", false)
                if learned == .none { learned = strategy }
            }
        }

        // Downloads.
        if let multiEntry {
            do throws(NetdiskError) {
                guard let link = try await api.downloadLinks(fsIDs: [multiEntry.fsID])[multiEntry.fsID] else {
                    throw NetdiskError.protocolViolation("filemetas gave no dlink")
                }
                let first = try await api.download(dlink: link, offset: 1000, length: 4096)
                if first == Array(content[1000..<5096]) {
                    pass("dlink with Range and User-Agent", "4 KiB at offset 1000, exact", true)
                } else {
                    fail("dlink with Range and User-Agent", .protocolViolation("wrong bytes (\(first.count))"), "reads would be wrong", true)
                }
                let start = BaiduProtocol.minFirstPartSize
                let second = try await api.download(dlink: link, offset: Int64(start), length: 1000)
                if second == Array(content[start..<start + 1000]) {
                    pass("second Range request on a reused connection", "exact", true)
                } else {
                    fail("second Range request on a reused connection", .protocolViolation("wrong bytes (\(second.count))"), "", true)
                }
            } catch {
                fail("dlink with Range and User-Agent", error, "the mount cannot read files", true)
                skip("second Range request on a reused connection", "no download", true)
            }
        } else {
            skip("dlink with Range and User-Agent", "no uploaded file", true)
            skip("second Range request on a reused connection", "no uploaded file", true)
        }

        // Move with ondup: fail refuses an existing target, overwrite replaces it.
        do throws(NetdiskError) {
            try await api.move(from: scratch + "/small.bin", toDirectory: scratch, newName: "moved.bin", ondup: .fail)
            var refused = false
            do throws(NetdiskError) {
                try await api.move(from: multi, toDirectory: scratch, newName: "moved.bin", ondup: .fail)
            } catch {
                guard case .alreadyExists = error else { throw error }
                refused = true
            }
            try await api.move(from: multi, toDirectory: scratch, newName: "moved.bin", ondup: .overwrite)
            let listed = try await api.list(directory: scratch, start: 0, limit: 1000).first { $0.name == "moved.bin" }
            if refused, listed?.size == Int64(content.count) {
                pass("move with ondup", "ondup=fail refuses an existing name; ondup=overwrite replaces it", true)
            } else {
                fail("move with ondup", .protocolViolation(refused ? "overwrite did not replace the target" : "ondup=fail moved onto an existing name"),
                     "renames onto existing files would be wrong", true)
            }
        } catch {
            fail("move with ondup", error, "", true)
        }
        return learned
    }

    /// precreate with the real block list, the parts to the located host, create; the size read back.
    private func upload(_ content: [UInt8], to path: String, slice: Int) async throws(NetdiskError) -> RemoteEntry {
        let digest = Self.digest(content, slice: slice)
        let result = try await api.precreate(path: path, size: Int64(content.count), blockList: digest.blocks, contentMD5: nil,
                                             sliceMD5: nil, localMtime: nil, policy: .overwrite)
        if let hit = result.rapidHit { return hit }
        guard let uploadID = result.uploadID else { throw .protocolViolation("precreate gave no uploadid") }
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, content.count), alignment: 16)
        defer { memory.deallocate() }
        content.withUnsafeBytes { memory.copyMemory(from: $0) }
        for (partseq, range) in digest.ranges.enumerated() {
            let part = UnsafeRawBufferPointer(rebasing: memory[range])
            let md5 = try await api.uploadPart(path: path, uploadID: uploadID, partseq: partseq,
                                               bytes: PartBytes(base: part.baseAddress, count: part.count))
            guard md5.lowercased() == digest.blocks[partseq] else {
                throw .partChecksumMismatch(partseq: partseq, expected: digest.blocks[partseq], received: md5)
            }
        }
        let entry = try await api.create(path: path, size: Int64(content.count), uploadID: uploadID, blockList: digest.blocks,
                                         localMtime: nil, policy: .overwrite)
        guard entry.size == Int64(content.count) else {
            throw .protocolViolation("create answered size \(entry.size) for \(content.count) bytes")
        }
        return entry
    }

    struct Digest {
        var blocks: [String]
        var ranges: [Range<Int>]
        var content: String
        var slice: String
    }

    static func digest(_ content: [UInt8], slice: Int) -> Digest {
        content.withUnsafeBytes { bytes in
            let ranges = stride(from: 0, to: max(content.count, 1), by: slice).map { $0..<min($0 + slice, content.count) }
            return Digest(blocks: ranges.map { MD5Hasher.hex(of: UnsafeRawBufferPointer(rebasing: bytes[$0])) }, ranges: ranges,
                          content: MD5Hasher.hex(of: bytes),
                          slice: MD5Hasher.hex(of: UnsafeRawBufferPointer(rebasing: bytes[0..<min(content.count, BaiduProtocol.sliceMD5Length)])))
        }
    }

    static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { raw in
            for offset in stride(from: 0, to: count - 7, by: 8) {
                raw.storeBytes(of: generator.next() as UInt64, toByteOffset: offset, as: UInt64.self)
            }
            for offset in (count - count % 8)..<count { raw[offset] = UInt8.random(in: 0...255, using: &generator) }
        }
        return bytes
    }
}

extension StreamingStrategy {
    public var checkName: String {
        switch self {
        case .xpanProvisional: return "streaming (a): xpan precreate with a provisional size"
        case .webPlaceholder: return "streaming (b): web-API precreate without size"
        case .none: return "streaming (c): none"
        }
    }
}

extension NetdiskError {
    /// The errno (xpan) or error_code (pcs) Baidu answered, when there was one.
    public var baiduCode: Int? {
        switch self {
        case .tokenInvalid(let code), .rateLimited(let code), .invalidName(let code), .alreadyExists(let code),
             .notFound(let code), .createFailed(let code), .emptyFileRefused(let code):
            return code
        case .badParameter(let code, _), .server(let code, _): return code
        case .quotaExceeded: return -10
        case .firstPartTooSmall: return 31299
        case .unknownUploadID: return 31355
        case .uploadExpired: return 31363
        case .partTooLarge: return 31364
        case .fileTooLarge: return 31365
        case .badUserAgent: return 31326
        case .dlinkExpired: return 31360
        default: return nil
        }
    }
}
