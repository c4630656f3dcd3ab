/// Removes secrets from anything that may reach a log: URLs, form bodies and JSON.
///
/// Every URL and body the client logs goes through ``redact(_:)`` so a token can never leak
/// through a forgotten call site. The keys cover OAuth (access and refresh tokens, the client
/// secret, the device `code`) in both `key=value` and JSON `"key": "value"` form.
public enum Redaction {
    /// Parameter names whose values are secrets.
    public static let secretKeys: Set<String> = ["access_token", "refresh_token", "client_secret", "code", "device_code"]
    public static let mask = "REDACTED"

    public static func redact(_ text: String) -> String {
        var bytes = Array(text.utf8)
        bytes = redactQueryStyle(bytes)
        bytes = redactJSONStyle(bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    private static let separators: Set<UInt8> = [UInt8(ascii: "?"), UInt8(ascii: "&"), UInt8(ascii: ";"),
                                                  UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\t")]
    private static let valueTerminators: Set<UInt8> = [UInt8(ascii: "&"), UInt8(ascii: "#"), UInt8(ascii: ";"),
                                                       UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\t"),
                                                       UInt8(ascii: "\""), UInt8(ascii: "'")]

    /// `key=value` pairs in query strings and form bodies; the key must start the text or follow a separator,
    /// so `error_code=5` is left alone while `code=abc` is masked.
    private static func redactQueryStyle(_ input: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(input.count)
        var index = 0
        while index < input.count {
            let atKeyStart = index == 0 || separators.contains(input[index - 1])
            if atKeyStart, let keyEnd = secretKeyEnd(in: input, at: index), keyEnd < input.count,
               input[keyEnd] == UInt8(ascii: "=") {
                out.append(contentsOf: input[index...keyEnd])
                var valueEnd = keyEnd + 1
                while valueEnd < input.count, !valueTerminators.contains(input[valueEnd]) { valueEnd += 1 }
                if valueEnd > keyEnd + 1 { out.append(contentsOf: mask.utf8) }
                index = valueEnd
                continue
            }
            out.append(input[index])
            index += 1
        }
        return out
    }

    /// `"key": "value"` (or a bare value) in JSON.
    private static func redactJSONStyle(_ input: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(input.count)
        var index = 0
        let quote = UInt8(ascii: "\"")
        while index < input.count {
            if input[index] == quote, let keyEnd = secretKeyEnd(in: input, at: index + 1),
               keyEnd < input.count, input[keyEnd] == quote {
                var cursor = keyEnd + 1
                while cursor < input.count, input[cursor] == UInt8(ascii: " ") { cursor += 1 }
                if cursor < input.count, input[cursor] == UInt8(ascii: ":") {
                    cursor += 1
                    while cursor < input.count, input[cursor] == UInt8(ascii: " ") { cursor += 1 }
                    out.append(contentsOf: input[index..<cursor])
                    if cursor < input.count, input[cursor] == quote {
                        var end = cursor + 1
                        while end < input.count, input[end] != quote {
                            end += input[end] == UInt8(ascii: "\\") ? 2 : 1
                        }
                        out.append(quote)
                        out.append(contentsOf: mask.utf8)
                        out.append(quote)
                        index = min(end + 1, input.count)
                    } else {
                        var end = cursor
                        while end < input.count, input[end] != UInt8(ascii: ","), input[end] != UInt8(ascii: "}") { end += 1 }
                        if end > cursor { out.append(contentsOf: mask.utf8) }
                        index = end
                    }
                    continue
                }
            }
            out.append(input[index])
            index += 1
        }
        return out
    }

    /// If a secret key starts at `index`, the index just past it.
    private static func secretKeyEnd(in input: [UInt8], at index: Int) -> Int? {
        for key in secretKeyBytes {
            let end = index + key.count
            if end <= input.count, input[index..<end].elementsEqual(key) { return end }
        }
        return nil
    }

    /// Longest first, so `code` never shadows `device_code` at the same position.
    private static let secretKeyBytes: [[UInt8]] = secretKeys.map { Array($0.utf8) }.sorted { $0.count > $1.count }
}
