import CCurl

/// Decides which URLs the client may contact: https anywhere, plain http only to loopback.
///
/// The URL is parsed with curl's own parser, so the host we check is the host curl connects to.
public enum URLPolicy {
    public struct Target: Sendable, Equatable {
        public var scheme: String
        public var host: String
    }

    /// Throws when the URL is malformed, uses another scheme, or is plain http to a non-loopback host.
    @discardableResult
    public static func check(_ url: String) throws(NetdiskError) -> Target {
        let target = try parse(url)
        switch target.scheme {
        case "https":
            return target
        case "http":
            guard isLoopback(host: target.host) else {
                throw NetdiskError.protocolViolation(
                    "refusing plain http to \(target.host): http is allowed only to loopback (127.0.0.0/8, ::1, localhost); use https")
            }
            return target
        default:
            throw NetdiskError.protocolViolation("refusing URL scheme '\(target.scheme)': only https (and http to loopback) are allowed")
        }
    }

    public static func isLoopback(host: String) -> Bool {
        let lowered = host.lowercased()
        if lowered == "localhost" || lowered == "[::1]" || lowered == "::1" { return true }
        let parts = lowered.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return false }
        var octets = [Int]()
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let value = Int(part), value <= 255 else { return false }
            octets.append(value)
        }
        return octets[0] == 127
    }

    static func parse(_ url: String) throws(NetdiskError) -> Target {
        guard let handle = curl_url() else { throw NetdiskError.localIO("curl_url: out of memory") }
        defer { curl_url_cleanup(handle) }
        guard curl_url_set(handle, CURLUPART_URL, url, 0) == CURLUE_OK else {
            throw NetdiskError.protocolViolation("malformed URL: \(Redaction.redact(url))")
        }
        func part(_ which: CURLUPart) -> String? {
            var value: UnsafeMutablePointer<CChar>?
            guard curl_url_get(handle, which, &value, 0) == CURLUE_OK, let value else { return nil }
            defer { curl_free(value) }
            return String(cString: value)
        }
        guard let scheme = part(CURLUPART_SCHEME), let host = part(CURLUPART_HOST) else {
            throw NetdiskError.protocolViolation("URL without scheme or host: \(Redaction.redact(url))")
        }
        return Target(scheme: scheme.lowercased(), host: host)
    }
}
