import Foundation
import Hummingbird

/// JSON answers in Baidu's two error shapes: xpan hosts say `errno`, pcs hosts say `error_code`.
enum Reply {
    /// Set per call from the profile: request_id as a float (`1.8e+17`), as the real service sometimes sends.
    @TaskLocal static var requestIDAsFloat = false

    static func json(_ object: [String: Any], status: Int = 200, headers: HTTPFields = [:]) -> Response {
        var object = object
        if requestIDAsFloat, let id = object["request_id"] as? Int64 { object["request_id"] = Double(id) * 1e5 }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes])) ?? Data("{}".utf8)
        var fields = headers
        fields[.contentType] = "application/json; charset=utf-8"
        return Response(status: .init(code: status), headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func xpanError(_ failure: BaiduFailure) -> Response {
        json(["errno": failure.code, "errmsg": failure.message, "request_id": Random.requestID()])
    }

    /// pcs errors come with HTTP 400 (403 for download refusals), as the upload and download hosts do.
    static func pcsError(_ failure: BaiduFailure, status: Int = 400) -> Response {
        json(["error_code": failure.code, "error_msg": failure.message, "errno": failure.code,
              "request_id": Random.requestID()], status: status)
    }

    static func oauthError(_ error: String, _ description: String) -> Response {
        json(["error": error, "error_description": description], status: 400)
    }

    /// A response that promises a body and then drops the connection part-way: the "connection reset
    /// mid-body" fault. Hummingbird closes the channel when a body writer throws.
    static func reset() -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(contentLength: 4096) { writer in
            try await writer.write(ByteBuffer(string: "{\"errno\":0,\"md5\":\""))
            throw CancellationError()
        })
    }
}
