import CCurl
import CCurlShim
import Foundation
import Synchronization

/// One dedicated thread driving a `curl_multi` handle: all blocking curl work happens here.
///
/// Transfers are queued under a mutex and the thread is woken with `curl_multi_wakeup`. The multi
/// handle's connection cache keeps connections to each host alive between transfers, and easy handles
/// are recycled, so a steady stream of part uploads reuses both. Many transfers run concurrently on
/// the one thread; the Swift cooperative pool never blocks on curl.
final class CurlMultiLoop: @unchecked Sendable {
    private struct Queue {
        var pending: [CurlTransfer] = []
        /// Paused transfers whose sink has room again.
        var resumes: [CurlTransfer] = []
        var stopping = false
    }

    private let multi: UnsafeMutableRawPointer
    private let queue = Mutex(Queue())
    private let userAgent: String
    // Loop-thread state.
    private var running: [UnsafeMutableRawPointer: CurlTransfer] = [:]
    private var idleHandles: [UnsafeMutableRawPointer] = []
    private let maxIdleHandles = 32

    init(name: String, userAgent: String, maxConnections: Int) {
        CurlGlobal.initialize()
        guard let multi = curl_multi_init() else { fatalError("curl_multi_init failed") }
        self.multi = multi
        self.userAgent = userAgent
        _ = ndfs_curl_multi_setopt_long(multi, CURLMOPT_MAXCONNECTS, maxConnections)
        NamedThread.start(name) { [self] in run() }
    }

    func submit(_ transfer: CurlTransfer) {
        let accepted = queue.withLock { state -> Bool in
            guard !state.stopping else { return false }
            state.pending.append(transfer)
            return true
        }
        if accepted {
            curl_multi_wakeup(multi)
        } else {
            transfer.complete(.failure(.cancelled))
        }
    }

    /// Un-pauses a transfer its sink paused (curl then hands the held bytes again).
    func resume(_ transfer: CurlTransfer) {
        queue.withLock { $0.resumes.append(transfer) }
        curl_multi_wakeup(multi)
    }

    /// Wakes the loop so it notices a cancelled transfer at once rather than at the next progress callback.
    func wake() { curl_multi_wakeup(multi) }

    /// Finishes the transfers in flight, then ends the thread.
    func stop() {
        queue.withLock { $0.stopping = true }
        curl_multi_wakeup(multi)
    }

    private func run() {
        while true {
            let (newTransfers, resumes, stopping) = queue.withLock { state -> ([CurlTransfer], [CurlTransfer], Bool) in
                let pending = state.pending, resumes = state.resumes
                state.pending.removeAll(keepingCapacity: true)
                state.resumes.removeAll(keepingCapacity: true)
                return (pending, resumes, state.stopping)
            }
            for transfer in newTransfers { start(transfer) }
            for transfer in resumes {
                // Only a transfer still running here: its handle may already serve another one.
                if let easy = transfer.easy, running[easy] === transfer { _ = curl_easy_pause(easy, 0 /* CURLPAUSE_CONT */) }
            }
            if stopping && running.isEmpty { break }
            var stillRunning: Int32 = 0
            curl_multi_perform(multi, &stillRunning)
            collectFinished()
            abortCancelled()
            // A wakeup that arrived since the queue was read makes this return at once.
            curl_multi_poll(multi, nil, 0, 1000, nil)
        }
        for handle in idleHandles { curl_easy_cleanup(handle) }
        idleHandles.removeAll()
        curl_multi_cleanup(multi)
    }

    private func start(_ transfer: CurlTransfer) {
        guard let easy = idleHandles.popLast() ?? curl_easy_init() else {
            transfer.complete(.failure(.localIO("curl_easy_init failed")))
            return
        }
        transfer.easy = easy
        configure(easy, for: transfer)
        let code = curl_multi_add_handle(multi, easy)
        guard code == CURLM_OK else {
            recycle(easy)
            transfer.complete(.failure(.transport("curl_multi_add_handle: \(String(cString: curl_multi_strerror(code)))")))
            return
        }
        running[easy] = transfer
    }

    private func configure(_ easy: UnsafeMutableRawPointer, for transfer: CurlTransfer) {
        let request = transfer.request
        let context = Unmanaged.passUnretained(transfer).toOpaque()
        _ = ndfs_curl_setopt_string(easy, CURLOPT_URL, request.url)
        _ = ndfs_curl_setopt_long(easy, CURLOPT_NOSIGNAL, 1)
        _ = ndfs_curl_setopt_string(easy, CURLOPT_PROTOCOLS_STR, "http,https")
        _ = ndfs_curl_setopt_long(easy, CURLOPT_FOLLOWLOCATION, 0)
        _ = ndfs_curl_setopt_long(easy, CURLOPT_SSL_VERIFYPEER, 1)
        _ = ndfs_curl_setopt_long(easy, CURLOPT_SSL_VERIFYHOST, 2)
        _ = ndfs_curl_setopt_string(easy, CURLOPT_USERAGENT, userAgent)
        _ = ndfs_curl_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, 15_000)
        if request.timeout > 0 {
            _ = ndfs_curl_setopt_long(easy, CURLOPT_TIMEOUT_MS, Int(request.timeout * 1000))
        }
        if request.stallTimeout > 0 {
            _ = ndfs_curl_setopt_long(easy, CURLOPT_LOW_SPEED_LIMIT, HTTPRequest.stallRate)
            _ = ndfs_curl_setopt_long(easy, CURLOPT_LOW_SPEED_TIME, request.stallTimeout)
        }
        _ = ndfs_curl_setopt_long(easy, CURLOPT_TCP_KEEPALIVE, 1)
        // HTTP/1.1: concurrent parts get a TCP connection each instead of sharing one multiplexed HTTP/2
        // connection (and its single congestion window) to the upload host.
        _ = ndfs_curl_setopt_long(easy, CURLOPT_HTTP_VERSION, Int(CURL_HTTP_VERSION_1_1))
        _ = ndfs_curl_setopt_long(easy, CURLOPT_BUFFERSIZE, 512 << 10)
        _ = ndfs_curl_setopt_write_function(easy, curlWriteCallback)
        _ = ndfs_curl_setopt_pointer(easy, CURLOPT_WRITEDATA, context)
        _ = ndfs_curl_setopt_long(easy, CURLOPT_NOPROGRESS, 0)
        _ = ndfs_curl_setopt_xferinfo_function(easy, curlProgressCallback)
        _ = ndfs_curl_setopt_pointer(easy, CURLOPT_XFERINFODATA, context)
        _ = ndfs_curl_setopt_pointer(easy, CURLOPT_PRIVATE, context)

        var headers: UnsafeMutablePointer<curl_slist>? = nil
        for line in request.headers { headers = curl_slist_append(headers, line) }
        switch request.method {
        case .get:
            _ = ndfs_curl_setopt_long(easy, CURLOPT_HTTPGET, 1)
        case .post:
            // Without this curl waits up to a second for "100 Continue" before sending a large body.
            headers = curl_slist_append(headers, "Expect:")
            _ = ndfs_curl_setopt_long(easy, CURLOPT_POST, 1)
            _ = ndfs_curl_setopt_off_t(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(request.body.count))
            _ = ndfs_curl_setopt_read_function(easy, curlReadCallback)
            _ = ndfs_curl_setopt_pointer(easy, CURLOPT_READDATA, context)
            _ = ndfs_curl_setopt_seek_function(easy, curlSeekCallback)
            _ = ndfs_curl_setopt_pointer(easy, CURLOPT_SEEKDATA, context)
            _ = ndfs_curl_setopt_long(easy, CURLOPT_UPLOAD_BUFFERSIZE, 512 << 10)
        }
        transfer.headerList = headers
        _ = ndfs_curl_setopt_headers(easy, headers)
    }

    private func collectFinished() {
        var remaining: Int32 = 0
        while let message = curl_multi_info_read(multi, &remaining) {
            guard ndfs_curl_msg_is_done(message) != 0, let easy = ndfs_curl_msg_easy(message) else { continue }
            let code = ndfs_curl_msg_result(message)
            curl_multi_remove_handle(multi, easy)
            guard let transfer = running.removeValue(forKey: easy) else { continue }
            let result = outcome(of: transfer, easy: easy, code: code)
            recycle(easy)
            transfer.complete(result)
        }
    }

    /// Removes transfers whose task was cancelled; their continuations resume with `.cancelled` now.
    private func abortCancelled() {
        for (easy, transfer) in running where transfer.cancelled.load(ordering: .relaxed) {
            curl_multi_remove_handle(multi, easy)
            running[easy] = nil
            recycle(easy)
            transfer.complete(.failure(.cancelled))
        }
    }

    private func outcome(of transfer: CurlTransfer, easy: UnsafeMutableRawPointer,
                         code: CURLcode) -> Result<HTTPResponse, NetdiskError> {
        if transfer.cancelled.load(ordering: .relaxed) { return .failure(.cancelled) }
        if transfer.responseTooLarge {
            return .failure(.protocolViolation("response larger than \(transfer.request.maxResponseSize) bytes"))
        }
        guard code == CURLE_OK else { return .failure(CurlGlobal.error(for: code)) }
        var status = 0
        _ = ndfs_curl_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
        var redirect: UnsafePointer<CChar>? = nil
        _ = ndfs_curl_getinfo_string(easy, CURLINFO_REDIRECT_URL, &redirect)
        var connects = 0
        _ = ndfs_curl_getinfo_long(easy, CURLINFO_NUM_CONNECTS, &connects)
        let body = transfer.responseBody
        transfer.responseBody = []
        return .success(HTTPResponse(status: status, body: body, redirectURL: redirect.map { String(cString: $0) },
                                     connectionsOpened: connects))
    }

    private func recycle(_ easy: UnsafeMutableRawPointer) {
        if idleHandles.count < maxIdleHandles {
            curl_easy_reset(easy)
            idleHandles.append(easy)
        } else {
            curl_easy_cleanup(easy)
        }
    }
}

/// Process-wide libcurl setup and error translation.
enum CurlGlobal {
    private static let initialized: Bool = {
        curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK
    }()

    static func initialize() { precondition(initialized, "curl_global_init failed") }

    static func error(for code: CURLcode) -> NetdiskError {
        let text = String(cString: curl_easy_strerror(code))
        switch code {
        case CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CACERT_BADFILE, CURLE_SSL_CERTPROBLEM:
            // A certificate that does not verify is not a glitch to retry.
            return .protocolViolation("TLS verification failed: \(text)")
        case CURLE_UNSUPPORTED_PROTOCOL, CURLE_URL_MALFORMAT:
            return .protocolViolation(text)
        case CURLE_ABORTED_BY_CALLBACK:
            return .cancelled
        default:
            return .transport("\(text) (curl \(code.rawValue))")
        }
    }
}
