import Foundation
import Synchronization

/// What an injected fault does to the call it fires on.
enum FaultAction: Sendable, Equatable {
    /// Answer with this HTTP status and a small JSON body.
    case status(Int)
    /// Send the response head and part of the body, then drop the connection; the call has no effect.
    case reset
    /// Serve the call (it takes effect), then answer like `reset`: the client cannot know it succeeded.
    case resetAfter
    /// Wait this many seconds, then serve the call normally.
    case delay(Double)
    /// Serve the call, then wait this many seconds before answering: a slow way back, so the
    /// answer shows the state at the moment it was served (as a real network's would).
    case delayAfter(Double)
    /// Answer with this Baidu errno (error_code on pcs hosts).
    case errno(Int)
    /// Expire every access token now; the call itself then fails as expired.
    case expireToken
    /// Expire the call's uploadid (or every open upload when the call names none) now.
    case expireUpload
    /// superfile2: store the part with its first byte flipped and answer that MD5.
    case badMD5
    /// token endpoint: answer authorization_pending / slow_down / expired_token.
    case oauthError(String)
}

/// One rule of the fault spec: `endpoint:action[:trigger...]`.
struct FaultRule: Sendable, Equatable {
    var endpoint: String
    var action: FaultAction
    /// Fire with this probability per matching call.
    var probability: Double?
    /// Fire from the Nth matching call on (1-based).
    var nth: Int?
    /// Fire at most this many times (default: 1 with `n`, unlimited otherwise).
    var count: Int?
}

enum FaultSpecError: Error, CustomStringConvertible {
    case invalid(String)
    var description: String {
        switch self { case .invalid(let why): return "invalid fault spec: \(why)" }
    }
}

/// The fault spec, text or JSON. See doc/EMULATOR.md for the grammar.
enum FaultSpec {
    static let endpoints: Set<String> = ["*", "device_code", "token", "uinfo", "quota", "list", "filemetas", "precreate",
                                         "locateupload", "superfile2", "create", "filemanager", "download", "cdn"]

    static func parse(_ spec: String) throws(FaultSpecError) -> [FaultRule] {
        let trimmed = spec.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.isEmpty { return [] }
        if trimmed.hasPrefix("[") || trimmed.hasPrefix("{") { return try parseJSON(trimmed) }
        return try trimmed.split(whereSeparator: { $0 == "," || $0 == "\n" }).map { item throws(FaultSpecError) in
            let tokens = item.trimmingCharacters(in: .whitespaces).split(separator: ":").map(String.init)
            guard tokens.count >= 2 else { throw .invalid("'\(item)' needs endpoint:action") }
            var fields: [String: String] = [:]
            var action: String?
            for token in tokens.dropFirst() {
                let kv = token.split(separator: "=", maxSplits: 1).map(String.init)
                if kv.count == 2, ["p", "n", "count"].contains(kv[0]) {
                    fields[kv[0]] = kv[1]
                } else if action == nil {
                    action = token
                } else {
                    throw .invalid("'\(item)' has two actions")
                }
            }
            guard let action else { throw .invalid("'\(item)' has no action") }
            return try rule(endpoint: tokens[0], action: action, fields: fields)
        }
    }

    private static func parseJSON(_ text: String) throws(FaultSpecError) -> [FaultRule] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) else { throw .invalid("not JSON") }
        if let dict = object as? [String: Any] {
            if let spec = dict["spec"] as? String { return try parse(spec) }
            if let faults = dict["faults"] as? [Any] { return try parseJSONRules(faults) }
            return try parseJSONRules([dict])
        }
        if let array = object as? [Any] { return try parseJSONRules(array) }
        throw .invalid("JSON must be an object or an array")
    }

    private static func parseJSONRules(_ items: [Any]) throws(FaultSpecError) -> [FaultRule] {
        try items.map { item throws(FaultSpecError) in
            if let text = item as? String {
                let rules = try parse(text)
                guard rules.count == 1 else { throw .invalid("'\(text)' is not one rule") }
                return rules[0]
            }
            guard let dict = item as? [String: Any], let endpoint = dict["endpoint"] as? String,
                  let action = dict["action"] as? String else { throw .invalid("each rule needs endpoint and action") }
            var fields: [String: String] = [:]
            for key in ["p", "n", "count"] { if let v = dict[key] { fields[key] = "\(v)" } }
            var actionText = action
            if let value = dict["value"] { actionText += "=\(value)" }
            return try rule(endpoint: endpoint, action: actionText, fields: fields)
        }
    }

    private static func rule(endpoint: String, action: String, fields: [String: String]) throws(FaultSpecError) -> FaultRule {
        guard endpoints.contains(endpoint) else {
            throw .invalid("unknown endpoint '\(endpoint)' (one of \(endpoints.sorted().joined(separator: ", ")))")
        }
        let kv = action.split(separator: "=", maxSplits: 1).map(String.init)
        let name = kv[0]
        let value = kv.count > 1 ? kv[1] : nil
        let parsed: FaultAction
        switch name {
        case "status":
            guard let code = value.flatMap(Int.init), (400...599).contains(code) else { throw .invalid("status needs 4xx/5xx") }
            parsed = .status(code)
        case "500", "503", "502", "429":
            parsed = .status(Int(name)!)
        case "reset": parsed = .reset
        case "reset-after", "drop": parsed = .resetAfter
        case "delay":
            guard let value, let seconds = parseDuration(value) else { throw .invalid("delay needs e.g. 200ms or 2s") }
            parsed = .delay(seconds)
        case "delay-after":
            guard let value, let seconds = parseDuration(value) else { throw .invalid("delay-after needs e.g. 200ms or 2s") }
            parsed = .delayAfter(seconds)
        case "errno":
            guard let code = value.flatMap(Int.init) else { throw .invalid("errno needs a number") }
            parsed = .errno(code)
        case "ratelimit": parsed = .errno(31034)
        case "expire-token", "expire_token", "token-expiry": parsed = .expireToken
        case "expire-upload", "expire_upload", "uploadid-expiry": parsed = .expireUpload
        case "badmd5": parsed = .badMD5
        case "pending", "authorization_pending": parsed = .oauthError("authorization_pending")
        case "slow_down": parsed = .oauthError("slow_down")
        case "expired_token": parsed = .oauthError("expired_token")
        default: throw .invalid("unknown action '\(name)'")
        }
        var rule = FaultRule(endpoint: endpoint, action: parsed)
        if let p = fields["p"] {
            guard let v = Double(p), (0...1).contains(v) else { throw .invalid("p must be in 0...1") }
            rule.probability = v
        }
        if let n = fields["n"] {
            guard let v = Int(n), v >= 1 else { throw .invalid("n must be ≥ 1") }
            rule.nth = v
        }
        if let c = fields["count"] {
            guard let v = Int(c), v >= 1 else { throw .invalid("count must be ≥ 1") }
            rule.count = v
        }
        return rule
    }

    static func parseDuration(_ text: String) -> Double? {
        if text.hasSuffix("ms") { return Double(text.dropLast(2)).map { $0 / 1000 } }
        if text.hasSuffix("s") { return Double(text.dropLast()) }
        return Double(text).map { $0 / 1000 }
    }
}

/// The active fault rules and their call counters; replaced at run time by `POST /__emulator/faults`.
final class FaultInjector: Sendable {
    private struct Armed: Sendable {
        var rule: FaultRule
        var calls = 0
        var fired = 0
    }

    private let state: Mutex<[Armed]>

    init(rules: [FaultRule]) {
        state = Mutex(rules.map { Armed(rule: $0) })
    }

    func replace(_ rules: [FaultRule]) {
        state.withLock { $0 = rules.map { Armed(rule: $0) } }
    }

    var rules: [FaultRule] { state.withLock { $0.map(\.rule) } }

    /// The actions that fire on this call of `endpoint` (each matching rule counts the call).
    func fire(_ endpoint: String) -> [FaultAction] {
        state.withLock { armed in
            var actions: [FaultAction] = []
            for i in armed.indices where armed[i].rule.endpoint == endpoint || armed[i].rule.endpoint == "*" {
                armed[i].calls += 1
                let rule = armed[i].rule
                let limit = rule.count ?? (rule.nth != nil ? 1 : Int.max)
                guard armed[i].fired < limit else { continue }
                if let nth = rule.nth, armed[i].calls < nth { continue }
                if let p = rule.probability, Double.random(in: 0..<1) >= p { continue }
                armed[i].fired += 1
                actions.append(rule.action)
            }
            return actions
        }
    }
}
