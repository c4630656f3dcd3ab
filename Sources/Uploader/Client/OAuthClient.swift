import Foundation
import Logging

/// Baidu's OAuth 2.0 device flow and refresh, on the OAuth endpoint.
///
/// It never logs a token: URLs go through ``Redaction`` in the transport, and token answers are not logged.
public struct OAuthClient: Sendable {
    public var endpoint: String
    public var clientID: String
    public var clientSecret: String
    public var transport: HTTPTransport
    public var logger: Logger
    public var retryPolicy: RetryPolicy

    public init(endpoint: String, clientID: String, clientSecret: String, transport: HTTPTransport = .shared,
                logger: Logger = Logger(label: "netdiskfs.oauth"), retryPolicy: RetryPolicy = RetryPolicy()) {
        self.endpoint = endpoint
        self.clientID = clientID
        self.clientSecret = clientSecret
        self.transport = transport
        self.logger = logger
        self.retryPolicy = retryPolicy
    }

    /// What the user needs to approve this device.
    public struct DeviceAuthorization: Sendable, Equatable {
        public var deviceCode: String
        public var userCode: String
        public var verificationURL: String
        public var qrcodeURL: String?
        public var expiresIn: Int
        public var interval: Int

        /// The URL a phone opens from the QR code: the verification page with the user code filled in.
        public var verificationURLWithCode: String {
            let separator = verificationURL.contains("?") ? "&" : "?"
            return "\(verificationURL)\(separator)code=\(FormEncoding.percentEncode(userCode))"
        }
    }

    public enum PollResult: Sendable, Equatable {
        case granted(TokenPair)
        /// The user has not approved yet; ask again after the interval.
        case pending
        /// Polling too fast; the interval must grow.
        case slowDown
        /// The device code expired; start over.
        case expired
        /// The user declined, or the server refused the request.
        case denied(String)
    }

    private struct DeviceCodeAnswer: Decodable {
        var device_code: String
        var user_code: String
        var verification_url: String
        var qrcode_url: String?
        var expires_in: LenientInt?
        var interval: LenientInt?
    }

    private struct TokenAnswer: Decodable {
        var access_token: String?
        var refresh_token: String?
        var expires_in: LenientInt?
        var error: String?
        var error_description: String?
    }

    public func requestDeviceCode(scope: String = "basic,netdisk") async throws(NetdiskError) -> DeviceAuthorization {
        let url = URLBuilder(endpoint, "/oauth/2.0/device/code")
            .adding("response_type", "device_code").adding("client_id", clientID).adding("scope", scope).string
        let response = try await send(url, call: "device/code")
        let answer = try ResponseDecoding.decode(DeviceCodeAnswer.self, from: try oauthChecked(response), call: "device/code")
        return DeviceAuthorization(deviceCode: answer.device_code, userCode: answer.user_code,
                                   verificationURL: answer.verification_url, qrcodeURL: answer.qrcode_url,
                                   expiresIn: answer.expires_in?.value ?? 300, interval: max(1, answer.interval?.value ?? 5))
    }

    /// One poll of the token endpoint for a device code.
    public func pollToken(deviceCode: String) async throws(NetdiskError) -> PollResult {
        let url = URLBuilder(endpoint, "/oauth/2.0/token")
            .adding("grant_type", "device_token").adding("code", deviceCode)
            .adding("client_id", clientID).adding("client_secret", clientSecret).string
        let response = try await send(url, call: "token")
        let answer = try decodeTokenAnswer(response)
        switch answer.error {
        case nil:
            return .granted(try tokenPair(from: answer))
        case "authorization_pending":
            return .pending
        case "slow_down":
            return .slowDown
        case "expired_token":
            return .expired
        case let other?:
            return .denied(answer.error_description.map { "\(other): \($0)" } ?? other)
        }
    }

    /// Exchanges a refresh token for a new pair. Refresh tokens work once: the caller persists the result.
    public func refresh(refreshToken: String) async throws(NetdiskError) -> TokenPair {
        let url = URLBuilder(endpoint, "/oauth/2.0/token")
            .adding("grant_type", "refresh_token").adding("refresh_token", refreshToken)
            .adding("client_id", clientID).adding("client_secret", clientSecret).string
        let response = try await send(url, call: "refresh")
        let answer = try decodeTokenAnswer(response)
        if let error = answer.error {
            throw NetdiskError.notLoggedIn("the refresh token was refused (\(error)); run `netdiskfs login`")
        }
        return try tokenPair(from: answer)
    }

    private func send(_ url: String, call: String) async throws(NetdiskError) -> HTTPResponse {
        var retries = 0
        while true {
            do throws(NetdiskError) {
                let response = try await transport.send(HTTPRequest(method: .get, url: url, timeout: 60), logger: logger)
                if response.status >= 500 { throw NetdiskError.http(status: response.status) }
                return response
            } catch {
                guard retryPolicy.shouldRetry(error, afterRetries: retries) else { throw error }
                retries += 1
                logger.info("OAuth \(call): \(error); retry \(retries) of \(retryPolicy.maxRetries)")
                try await sleep(seconds: retryPolicy.delay(beforeRetry: retries))
            }
        }
    }

    /// OAuth errors are `{"error": "..."}` with HTTP 400/401; only the token calls interpret them.
    private func decodeTokenAnswer(_ response: HTTPResponse) throws(NetdiskError) -> TokenAnswer {
        guard let answer = try? JSONDecoder().decode(TokenAnswer.self, from: Data(response.body)) else {
            throw NetdiskError.protocolViolation("token endpoint answered HTTP \(response.status) without JSON")
        }
        if answer.error == nil, response.status >= 400 { throw NetdiskError.http(status: response.status) }
        return answer
    }

    private func oauthChecked(_ response: HTTPResponse) throws(NetdiskError) -> HTTPResponse {
        if response.status >= 400, let answer = try? JSONDecoder().decode(TokenAnswer.self, from: Data(response.body)),
           let error = answer.error {
            throw NetdiskError.badParameter(code: response.status, message: answer.error_description.map { "\(error): \($0)" } ?? error)
        }
        return response
    }

    private func tokenPair(from answer: TokenAnswer) throws(NetdiskError) -> TokenPair {
        guard let access = answer.access_token, let refresh = answer.refresh_token else {
            throw NetdiskError.protocolViolation("token answer without access_token or refresh_token")
        }
        let lifetime = Double(answer.expires_in?.value ?? 2_592_000)
        return TokenPair(accessToken: access, refreshToken: refresh,
                         expiresAt: Date().timeIntervalSince1970 + lifetime, lifetime: lifetime, issuer: endpoint)
    }
}

/// Task.sleep with cancellation as a typed error.
func sleep(seconds: Double) async throws(NetdiskError) {
    do {
        try await Task.sleep(nanoseconds: UInt64(max(0, seconds) * 1_000_000_000))
    } catch {
        throw NetdiskError.cancelled
    }
}
