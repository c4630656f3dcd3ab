/// The readings of Baidu's uncertain behaviour (DESIGN.md, "What public clients show about the
/// real Baidu"), one knob each, so the client is tested against every reading, not just ours.
///
/// `default` is the emulator as first specified. `documented` takes the strict reading of each
/// point the research found: the one a careful client must survive.
public struct EmulatorProfile: Sendable, Equatable {
    /// `/api/precreate` and `/api/create` (the web-API twins) accept an OAuth token. Proven only with
    /// cookie auth (BaiduPCS-Go `--norapid`); when false they answer errno -6 to OAuth tokens.
    public var webAPIAcceptsOAuth = true
    /// xpan precreate accepts a `block_list` of placeholder entries (empty strings, as Duplicati sends
    /// with OAuth) when it gives a `size`. When false, every entry must be an MD5.
    public var xpanAcceptsPlaceholderBlocks = false
    /// create must repeat the size precreate was given (errno 10 otherwise). Unknown on the real
    /// service; the `documented` profile lets create give the true size.
    public var createMustRepeatPrecreateSize = true
    /// A 0-byte upload answers errno 2 (OpenList #264, #868).
    public var refuseEmptyFiles = false
    /// Parts per upload: the docs say 1024, OpenList measured 2048.
    public var maxParts = 2048
    /// create with a content MD5 and no uploadid (the "rapid create") answers 31500 whatever the
    /// content (OpenList #713); rapid upload then works only through precreate with content-md5.
    public var rapidCreateUnavailable = false
    /// superfile2 to an expired uploadid answers error_code 31299 "Expried Time Not Match" (Baidu's
    /// spelling) instead of 31363.
    public var expiredUploadAnswers31299 = false
    /// A normal (vip_type 0) account may hold this many download connections at once; one more
    /// answers 31034 (BaiduPCS-Go README: more than one gets the account throttled). 0: no limit.
    public var normalAccountDownloadConnections = 0
    /// request_id comes as a float (`1.8e+17`), which broke OpenList's parser (#2839).
    public var requestIDAsFloat = false

    public init() {}

    public static let `default` = EmulatorProfile()

    public static let documented: EmulatorProfile = {
        var profile = EmulatorProfile()
        profile.webAPIAcceptsOAuth = false
        profile.xpanAcceptsPlaceholderBlocks = true
        profile.createMustRepeatPrecreateSize = false
        profile.refuseEmptyFiles = true
        profile.maxParts = 1024
        profile.rapidCreateUnavailable = true
        profile.expiredUploadAnswers31299 = true
        profile.normalAccountDownloadConnections = 1
        profile.requestIDAsFloat = true
        return profile
    }()

    public static let names = ["default", "documented"]

    public static func named(_ name: String) -> EmulatorProfile? {
        switch name {
        case "default": return .default
        case "documented": return .documented
        default: return nil
        }
    }

    /// `knob=value` pairs for the log and `/__emulator/stats`.
    public var summary: [String: String] {
        [
            "web_api_accepts_oauth": "\(webAPIAcceptsOAuth)",
            "xpan_accepts_placeholder_blocks": "\(xpanAcceptsPlaceholderBlocks)",
            "create_must_repeat_precreate_size": "\(createMustRepeatPrecreateSize)",
            "refuse_empty_files": "\(refuseEmptyFiles)",
            "max_parts": "\(maxParts)",
            "rapid_create_unavailable": "\(rapidCreateUnavailable)",
            "expired_upload_answers_31299": "\(expiredUploadAnswers31299)",
            "normal_account_download_connections": "\(normalAccountDownloadConnections)",
            "request_id_as_float": "\(requestIDAsFloat)",
        ]
    }
}
