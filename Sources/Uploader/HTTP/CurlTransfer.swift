import CCurl
import CCurlShim
import Synchronization

/// One HTTP exchange in flight: the request, the response being received, and the continuation to resume.
///
/// Ownership: the submitting task creates it and hands it to a ``CurlMultiLoop``; from then on only the
/// loop thread touches the mutable fields (curl callbacks run on that thread), until it resumes the
/// continuation exactly once. Only `cancelled` crosses threads, and it is atomic.
final class CurlTransfer: @unchecked Sendable {
    let request: HTTPRequest
    let cancelled = Atomic<Bool>(false)
    var continuation: CheckedContinuation<Result<HTTPResponse, NetdiskError>, Never>?
    var responseBody: [UInt8] = []
    var responseTooLarge = false
    var readOffset = 0
    var headerList: UnsafeMutablePointer<curl_slist>?
    let startedAt = ContinuousClock.now
    /// Set by the loop thread when the transfer starts (the write callback asks it for the status).
    var easy: UnsafeMutableRawPointer?
    /// Whether this answer's body goes to `request.sink` (decided at its first bytes).
    private var intoSink: Bool?

    init(request: HTTPRequest) {
        self.request = request
        request.sink?.attemptStarted()
        if request.sink == nil, request.expectedResponseSize > 0 {
            responseBody.reserveCapacity(min(request.expectedResponseSize, request.maxResponseSize))
        }
    }

    func cancel() { cancelled.store(true, ordering: .relaxed) }

    func complete(_ result: Result<HTTPResponse, NetdiskError>) {
        if let headerList { curl_slist_free_all(headerList) }
        headerList = nil
        let continuation = self.continuation
        self.continuation = nil
        continuation?.resume(returning: result)
    }

    /// Appends received bytes (or hands them to the sink); `.refused` when the response would exceed its limit.
    func receive(_ bytes: UnsafeRawBufferPointer) -> ResponseSink.Answer {
        if let sink = request.sink {
            if intoSink == nil {
                var status = 0
                if let easy { _ = ndfs_curl_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status) }
                intoSink = status == 206
            }
            if intoSink == true {
                let answer = sink.write(bytes)
                if answer == .refused { responseTooLarge = true }
                return answer
            }
        }
        guard responseBody.count + bytes.count <= request.maxResponseSize else {
            responseTooLarge = true
            return .refused
        }
        responseBody.append(contentsOf: bytes)
        return .accepted
    }

    /// Copies the next request body bytes into curl's buffer; reads the caller's part in place.
    func fill(_ destination: UnsafeMutableRawBufferPointer) -> Int {
        var written = 0
        func copy(segment: UnsafeRawBufferPointer, segmentStart: Int) {
            let segmentEnd = segmentStart + segment.count
            guard written < destination.count, readOffset < segmentEnd, readOffset >= segmentStart else { return }
            let from = readOffset - segmentStart
            let length = min(segment.count - from, destination.count - written)
            guard length > 0, let source = segment.baseAddress, let target = destination.baseAddress else { return }
            (target + written).copyMemory(from: source + from, byteCount: length)
            written += length
            readOffset += length
        }
        switch request.body {
        case .empty:
            break
        case .bytes(let bytes):
            bytes.withUnsafeBytes { copy(segment: $0, segmentStart: 0) }
        case .multipart(let prefix, let part, let suffix):
            prefix.withUnsafeBytes { copy(segment: $0, segmentStart: 0) }
            copy(segment: part.buffer, segmentStart: prefix.count)
            suffix.withUnsafeBytes { copy(segment: $0, segmentStart: prefix.count + part.count) }
        }
        return written
    }

    /// Rewinds the body (curl asks when it resends on a reused connection that died).
    func seek(to offset: Int) -> Bool {
        guard offset >= 0, offset <= request.body.count else { return false }
        readOffset = offset
        return true
    }
}

// MARK: - curl callbacks (C function pointers; the user data is an unretained CurlTransfer)

let curlWriteCallback: curl_write_callback = { buffer, size, count, userData in
    guard let userData else { return 0 }
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(userData).takeUnretainedValue()
    let length = size * count
    switch transfer.receive(UnsafeRawBufferPointer(start: buffer, count: length)) {
    case .accepted: return length
    case .pause: return 0x1000_0001 // CURL_WRITEFUNC_PAUSE
    case .refused: return 0
    }
}

let curlReadCallback: curl_read_callback = { buffer, size, count, userData in
    guard let userData, let buffer else { return 0 }
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(userData).takeUnretainedValue()
    return transfer.fill(UnsafeMutableRawBufferPointer(start: buffer, count: size * count))
}

let curlSeekCallback: curl_seek_callback = { userData, offset, origin in
    guard let userData, origin == SEEK_SET else { return Int32(CURL_SEEKFUNC_CANTSEEK) }
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(userData).takeUnretainedValue()
    return transfer.seek(to: Int(offset)) ? Int32(CURL_SEEKFUNC_OK) : Int32(CURL_SEEKFUNC_FAIL)
}

let curlProgressCallback: curl_xferinfo_callback = { userData, _, _, _, _ in
    guard let userData else { return 0 }
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(userData).takeUnretainedValue()
    return transfer.cancelled.load(ordering: .relaxed) ? 1 : 0
}
