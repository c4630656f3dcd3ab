/// The three Baidu hosts. One emulator URL can stand in for all of them.
public struct Endpoints: Sendable, Equatable, Codable {
    public var api: String
    public var upload: String
    public var oauth: String

    public init(api: String, upload: String, oauth: String) {
        self.api = Endpoints.trimmed(api)
        self.upload = Endpoints.trimmed(upload)
        self.oauth = Endpoints.trimmed(oauth)
    }

    private enum CodingKeys: String, CodingKey { case api, upload, oauth }

    /// Decoded URLs are normalized like constructed ones (no trailing slash), so issuer checks compare equal.
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(api: try container.decode(String.self, forKey: .api),
                  upload: try container.decode(String.self, forKey: .upload),
                  oauth: try container.decode(String.self, forKey: .oauth))
    }

    public static let baidu = Endpoints(api: "https://pan.baidu.com", upload: "https://d.pcs.baidu.com",
                                        oauth: "https://openapi.baidu.com")

    /// All three hosts at one base URL (the emulator).
    public static func single(_ url: String) -> Endpoints { Endpoints(api: url, upload: url, oauth: url) }

    /// Checks each URL against ``URLPolicy`` (https, or http to loopback).
    public func validate() throws(NetdiskError) {
        for url in [api, upload, oauth] { try URLPolicy.check(url) }
    }

    /// True when every host is loopback: an emulator, not Baidu.
    public var isLoopback: Bool {
        [api, upload, oauth].allSatisfy { (try? URLPolicy.parse($0)).map { URLPolicy.isLoopback(host: $0.host) } ?? false }
    }

    private static func trimmed(_ url: String) -> String {
        var url = url
        while url.hasSuffix("/") { url.removeLast() }
        return url
    }
}
