import Foundation
import Testing
@testable import NetdiskEmulator

@Suite("Fault injection")
struct FaultTests {
    @Test func specParsesTextAndJSONAndRejectsNonsense() throws {
        let rules = try FaultSpec.parse("superfile2:status=500:p=0.1,create:errno=31034:n=1,superfile2:reset:n=2,list:delay=200ms,superfile2:badmd5:n=1:count=2")
        #expect(rules.count == 5)
        #expect(rules[0] == FaultRule(endpoint: "superfile2", action: .status(500), probability: 0.1))
        #expect(rules[1] == FaultRule(endpoint: "create", action: .errno(31034), nth: 1))
        #expect(rules[3].action == .delay(0.2))
        #expect(rules[4].count == 2)
        let json = try FaultSpec.parse(#"[{"endpoint":"precreate","action":"status","value":503,"n":2},"*:expire-token:n=4"]"#)
        #expect(json == [FaultRule(endpoint: "precreate", action: .status(503), nth: 2),
                         FaultRule(endpoint: "*", action: .expireToken, nth: 4)])
        #expect(try FaultSpec.parse(#"{"spec":"list:reset"}"#) == [FaultRule(endpoint: "list", action: .reset)])
        #expect(throws: FaultSpecError.self) { try FaultSpec.parse("nowhere:reset") }
        #expect(throws: FaultSpecError.self) { try FaultSpec.parse("list:explode") }
        #expect(throws: FaultSpecError.self) { try FaultSpec.parse("list:reset:p=2") }
    }

    @Test func httpStatusOnTheNthCallOnly() async throws {
        try await withEmulator(configure: { $0.faults = "quota:status=503:n=2" }) { (emu: Emu) async throws in
            #expect(try await emu.get("/api/quota").status == 200)
            #expect(try await emu.get("/api/quota").status == 503)
            #expect(try await emu.get("/api/quota").status == 200)
            try await emu.setFaults("quota:500:count=2")
            #expect(try await emu.get("/api/quota").status == 500)
            #expect(try await emu.get("/api/quota").status == 500)
            #expect(try await emu.get("/api/quota").status == 200)
            let bad = try await HTTP.send(emu.base + "/__emulator/faults", method: "POST", body: Data("quota:boom".utf8))
            #expect(bad.status == 400)
        }
    }

    @Test func probabilityOneAlwaysFiresAndZeroNever() async throws {
        try await withEmulator(configure: { $0.faults = "list:errno=31034:p=1" }) { (emu: Emu) async throws in
            for _ in 0..<3 { #expect(try await emu.list("/").errno == 31034) }
            try await emu.setFaults("list:errno=31034:p=0")
            for _ in 0..<3 { #expect(try await emu.list("/").errno == 0) }
            #expect(int((try await emu.stats()["faults_fired"] as? [String: Any])?["list"]) == 3)
        }
    }

    @Test func rateLimitErrnoOnPcsHostsIsAnErrorCode() async throws {
        try await withEmulator(configure: { $0.faults = "superfile2:errno=31034" }) { (emu: Emu) async throws in
            let id = try await emu.precreate("/a", size: 1, blocks: [md5Hex(Data([1]))]).json["uploadid"] as! String
            #expect(try await emu.superfile2(path: "/a", uploadID: id, partseq: 0, data: Data([1])).errorCode == 31034)
        }
    }

    @Test func delaySlowsTheCall() async throws {
        try await withEmulator(configure: { $0.faults = "uinfo:delay=300ms" }) { (emu: Emu) async throws in
            let start = ContinuousClock.now
            #expect(try await emu.get("/rest/2.0/xpan/nas?method=uinfo").errno == 0)
            #expect(ContinuousClock.now - start >= .milliseconds(290))
        }
    }

    @Test func resetDropsTheConnectionMidBody() async throws {
        try await withEmulator(configure: { $0.faults = "superfile2:reset:n=1" }) { (emu: Emu) async throws in
            let data = randomData(1000)
            let id = try await emu.precreate("/a", size: 1000, blocks: [md5Hex(data)]).json["uploadid"] as! String
            await #expect(throws: (any Error).self) {
                _ = try await emu.superfile2(path: "/a", uploadID: id, partseq: 0, data: data)
            }
            // The retry goes through and the upload completes.
            #expect(try await emu.superfile2(path: "/a", uploadID: id, partseq: 0, data: data).json["md5"] as? String == md5Hex(data))
            #expect(try await emu.create("/a", size: 1000, blocks: [md5Hex(data)], uploadID: id).errno == 0)
        }
    }

    @Test func resetAfterServesTheCallButLosesTheAnswer() async throws {
        try await withEmulator(configure: { $0.faults = "create:reset-after:n=1" }) { (emu: Emu) async throws in
            let data = randomData(10)
            await #expect(throws: (any Error).self) { _ = try await emu.upload("/lost-answer", data) }
            #expect(try await emu.files()["/lost-answer"]?.md5 == md5Hex(data), "the create took effect")
        }
    }

    @Test func tokenExpiryNow() async throws {
        try await withEmulator(configure: { $0.faults = "list:expire-token:n=2" }) { (emu: Emu) async throws in
            #expect(try await emu.list("/").errno == 0)
            #expect(try await emu.list("/").errno == 111)
            #expect(try await emu.get("/api/quota").errno == 111)
        }
    }

    @Test func uploadIDExpiryNow() async throws {
        try await withEmulator(configure: { $0.faults = "superfile2:expire-upload:n=2" }) { (emu: Emu) async throws in
            let parts = [randomData(4 * MiB), randomData(10)]
            let id = try await emu.precreate("/a", size: 4 * MiB + 10, blocks: parts.map(md5Hex)).json["uploadid"] as! String
            #expect(try await emu.superfile2(path: "/a", uploadID: id, partseq: 0, data: parts[0]).json["md5"] != nil)
            #expect(try await emu.superfile2(path: "/a", uploadID: id, partseq: 1, data: parts[1]).errorCode == 31363)
            #expect(try await emu.create("/a", size: 4 * MiB + 10, blocks: parts.map(md5Hex), uploadID: id).errno == 31363)
        }
    }

    @Test func badMD5MeansTheStoredPartIsWrongUntilResent() async throws {
        try await withEmulator(configure: { $0.faults = "superfile2:badmd5:n=1" }) { (emu: Emu) async throws in
            let data = randomData(5000)
            let id = try await emu.precreate("/a", size: 5000, blocks: [md5Hex(data)]).json["uploadid"] as! String
            let first = try await emu.superfile2(path: "/a", uploadID: id, partseq: 0, data: data)
            let answered = try #require(first.json["md5"] as? String)
            #expect(answered != md5Hex(data))
            #expect(try await emu.create("/a", size: 5000, blocks: [md5Hex(data)], uploadID: id).errno == 10)
            #expect(try await emu.superfile2(path: "/a", uploadID: id, partseq: 0, data: data).json["md5"] as? String == md5Hex(data))
            #expect(try await emu.create("/a", size: 5000, blocks: [md5Hex(data)], uploadID: id).errno == 0)
            #expect(try await emu.files()["/a"]?.md5 == md5Hex(data))
        }
    }

    @Test func wildcardMatchesEveryEndpoint() async throws {
        try await withEmulator(configure: { $0.faults = "*:status=500:n=1:count=2" }) { (emu: Emu) async throws in
            #expect(try await emu.list("/").status == 500)
            #expect(try await emu.get("/api/quota").status == 500)
            #expect(try await emu.get("/api/quota").status == 200)
        }
    }
}
