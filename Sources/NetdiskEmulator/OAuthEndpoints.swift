import Hummingbird

/// The device-code flow and refresh tokens of openapi.baidu.com.
extension Emulator {
    static let deviceCodeLifetime: Double = 300

    private func clientAccepted(_ call: Call, requireSecret: Bool) -> Bool {
        guard let id = call.fields["client_id"], !id.isEmpty else { return false }
        if let expected = options.clientID, expected != id { return false }
        if requireSecret, let secret = options.clientSecret, call.fields["client_secret"] != secret { return false }
        return true
    }

    func deviceCode(_ call: Call) async throws -> Response {
        guard call.fields["response_type"] == "device_code" else {
            return Reply.oauthError("unsupported_response_type", "response_type must be device_code")
        }
        guard clientAccepted(call, requireSecret: false) else { return Reply.oauthError("invalid_client", "unknown client_id") }
        let code = try await store.createDeviceCode(lifetime: Self.deviceCodeLifetime)
        let userCode = String(Random.hex(4).uppercased())
        return Reply.json([
            "device_code": code, "user_code": userCode,
            "verification_url": baseURL + "/device", "qrcode_url": baseURL + "/qrcode/" + code,
            "expires_in": Int(Self.deviceCodeLifetime), "interval": options.devicePollInterval,
        ])
    }

    func token(_ call: Call) async throws -> Response {
        for case .oauthError(let error) in call.actions {
            return Reply.oauthError(error, "injected: \(error)")
        }
        guard clientAccepted(call, requireSecret: true) else { return Reply.oauthError("invalid_client", "unknown client") }
        switch call.fields["grant_type"] {
        case "device_token":
            guard let code = call.fields["code"] else { return Reply.oauthError("invalid_request", "code missing") }
            switch try await store.pollDeviceCode(code) {
            case .unknown, .redeemed: return Reply.oauthError("invalid_grant", "device code is invalid or used")
            case .expired: return Reply.oauthError("expired_token", "device code expired")
            case .polled(1): return Reply.oauthError("authorization_pending", "User has not yet completed the authorization")
            case .polled:
                try await store.redeemDeviceCode(code)
                return try await issueTokens()
            }
        case "refresh_token":
            guard let refresh = call.fields["refresh_token"], !refresh.isEmpty else {
                return Reply.oauthError("invalid_request", "refresh_token missing")
            }
            guard try await store.redeemRefreshToken(refresh) else {
                return Reply.oauthError("expired_token", "refresh token is invalid or has been used")
            }
            stats.refresh()
            return try await issueTokens()
        default:
            return Reply.oauthError("unsupported_grant_type", "grant_type must be device_token or refresh_token")
        }
    }

    func issueTokens() async throws -> Response {
        let pair = try await store.issueTokens(lifetime: options.accessTokenLifetime)
        return Reply.json(["access_token": pair.access, "refresh_token": pair.refresh,
                           "expires_in": Int(options.accessTokenLifetime), "scope": "basic netdisk",
                           "session_key": "", "session_secret": ""])
    }
}
