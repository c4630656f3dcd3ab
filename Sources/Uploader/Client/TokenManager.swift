import Foundation
import Logging

/// Holds the current token pair and serializes refreshes: a refresh token works only once.
///
/// Callers that saw a token rejected call ``refresh(rejected:)`` with the token they used. If the
/// pair has already been replaced, they get the new token at once; if a refresh is running, they
/// wait for it. So any number of concurrent calls that fail after expiry cause exactly one refresh.
/// The new pair is persisted (atomically, mode 0600) before anyone uses it.
public actor TokenManager {
    private var tokens: TokenPair?
    private var refreshing: Task<Result<TokenPair, NetdiskError>, Never>?
    private let oauth: OAuthClient
    private let store: CredentialStore?
    private let logger: Logger
    /// How many refreshes this manager performed (for tests and diagnostics).
    public private(set) var refreshCount = 0

    public init(tokens: TokenPair?, oauth: OAuthClient, store: CredentialStore?, logger: Logger) {
        self.tokens = tokens
        self.oauth = oauth
        self.store = store
        self.logger = logger
    }

    public var current: TokenPair? { tokens }

    /// Replaces the pair (after a login) and persists it.
    public func install(_ pair: TokenPair) async throws(NetdiskError) {
        tokens = pair
        try await store?.saveAsync(pair)
    }

    /// A usable access token, refreshed first when it is about to expire.
    public func accessToken() async throws(NetdiskError) -> String {
        guard let tokens else {
            throw NetdiskError.notLoggedIn("no credentials; run `netdiskfs login`")
        }
        guard tokens.issuer == oauth.endpoint else {
            throw NetdiskError.notLoggedIn("the saved credentials belong to \(tokens.issuer), not \(oauth.endpoint); run `netdiskfs login`")
        }
        if tokens.needsRefresh() {
            return try await refresh(rejected: tokens.accessToken)
        }
        return tokens.accessToken
    }

    /// Refreshes unless the rejected token was already replaced; concurrent callers share one refresh.
    public func refresh(rejected: String) async throws(NetdiskError) -> String {
        if let tokens, tokens.accessToken != rejected, !tokens.needsRefresh() { return tokens.accessToken }
        if let refreshing {
            // Install the result here too: this waiter may run before the refreshing caller resumes.
            let pair = try await refreshing.value.get()
            tokens = pair
            return pair.accessToken
        }
        guard let old = tokens else { throw NetdiskError.notLoggedIn("no credentials; run `netdiskfs login`") }
        let oauth = self.oauth, store = self.store, logger = self.logger
        let task = Task { () -> Result<TokenPair, NetdiskError> in
            do throws(NetdiskError) {
                // Another process (a mount, another command) may have refreshed already: its pair is on disk.
                if let stored = try await store?.loadAsync(), stored.refreshToken != old.refreshToken,
                   stored.issuer == old.issuer, !stored.needsRefresh() {
                    logger.debug("using the token pair another process refreshed")
                    return .success(stored)
                }
                logger.debug("refreshing the access token")
                let pair = try await oauth.refresh(refreshToken: old.refreshToken)
                do throws(NetdiskError) {
                    try await store?.saveAsync(pair)
                } catch {
                    logger.error("the refreshed token pair could not be saved (\(error)); the next run will need `netdiskfs login`")
                }
                return .success(pair)
            } catch {
                return .failure(error)
            }
        }
        refreshing = task
        refreshCount += 1
        let result = await task.value
        refreshing = nil
        if case .success(let pair) = result { tokens = pair }
        return try result.get().accessToken
    }
}
