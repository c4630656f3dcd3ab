import Testing
@testable import Uploader

@Suite struct RedactionTests {
    @Test func queryAndFormSecretsAreMasked() {
        let url = "https://pan.baidu.com/rest/2.0/xpan/file?method=list&access_token=abc.123-XYZ&dir=%2Fapps"
        #expect(Redaction.redact(url) == "https://pan.baidu.com/rest/2.0/xpan/file?method=list&access_token=REDACTED&dir=%2Fapps")
        let form = "grant_type=refresh_token&refresh_token=r1&client_id=id&client_secret=s3cr3t"
        #expect(Redaction.redact(form) == "grant_type=refresh_token&refresh_token=REDACTED&client_id=id&client_secret=REDACTED")
        let device = "/oauth/2.0/token?grant_type=device_token&code=dev-code-1&client_id=x"
        #expect(Redaction.redact(device) == "/oauth/2.0/token?grant_type=device_token&code=REDACTED&client_id=x")
    }

    @Test func lookalikeKeysAreKept() {
        #expect(Redaction.redact("a?error_code=31045&errcode=5") == "a?error_code=31045&errcode=5")
        #expect(Redaction.redact("x?user_code=ABCD") == "x?user_code=ABCD")
    }

    @Test func jsonSecretsAreMasked() {
        let json = #"{"access_token": "tok\"en", "expires_in":2592000,"refresh_token":"r2","device_code":"d","user_code":"U"}"#
        let redacted = Redaction.redact(json)
        #expect(redacted == #"{"access_token": "REDACTED", "expires_in":2592000,"refresh_token":"REDACTED","device_code":"REDACTED","user_code":"U"}"#)
    }

    @Test func tokenAtEndOfTextAndInLogLine() {
        #expect(Redaction.redact("GET http://127.0.0.1:1/x?access_token=t0k -> 200") == "GET http://127.0.0.1:1/x?access_token=REDACTED -> 200")
        #expect(Redaction.redact("access_token=zzz") == "access_token=REDACTED")
    }
}
