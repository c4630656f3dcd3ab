import Foundation

/// A way to start the upload of a file whose size is not known yet.
///
/// Why more than one: the research (DESIGN.md) found the web-API placeholder precreate proven only
/// with cookie auth, and the form that works with OAuth (Duplicati's xpan precreate with empty
/// block entries) proven only with the true size. Which one a given account takes is learned by a
/// probe (``StreamingStrategyProbe``) and remembered (``StreamingStrategyStore``); when neither
/// works, files take the cached path from their first write, with no failed attempt per file.
public enum StreamingStrategy: String, Codable, Sendable, CaseIterable {
    /// (a) xpan precreate with a provisional size and one empty block entry; create gives the true
    /// size and the real block list.
    case xpanProvisional = "xpan-provisional"
    /// (b) `/api/precreate` without a size and the two placeholder MD5s; `/api/create` commits.
    case webPlaceholder = "web-placeholder"
    /// (c) no streaming: the cached path from the first write.
    case none

    /// The order the learner tries them in: (a) is the form OAuth clients are seen to use.
    public static let probeOrder: [StreamingStrategy] = [.xpanProvisional, .webPlaceholder]

    public var label: String {
        switch self {
        case .xpanProvisional: return "(a) xpan precreate with a provisional size"
        case .webPlaceholder: return "(b) web-API precreate without size"
        case .none: return "(c) none: cached path"
        }
    }
}
