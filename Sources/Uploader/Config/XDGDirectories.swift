import Foundation

/// The XDG base directories netdiskfs keeps its files in, resolved one way everywhere.
///
/// Why one type: config, cache, state and data were each resolved by hand, some from `$HOME` and
/// some from the password database, so a user with `HOME` set elsewhere found their credentials
/// in one home and their mount logs in another. The XDG spec: an absolute `$XDG_*_HOME` wins,
/// else `$HOME` plus the default; the password database only when `HOME` is unset.
public enum XDGDirectories {
    public enum Kind: Sendable {
        case config, cache, state, data

        var variable: String {
            switch self {
            case .config: return "XDG_CONFIG_HOME"
            case .cache: return "XDG_CACHE_HOME"
            case .state: return "XDG_STATE_HOME"
            case .data: return "XDG_DATA_HOME"
            }
        }

        var defaultRelative: String {
            switch self {
            case .config: return ".config"
            case .cache: return ".cache"
            case .state: return ".local/state"
            case .data: return ".local/share"
            }
        }
    }

    /// `<base of kind>/netdiskfs`.
    public static func netdiskfs(_ kind: Kind,
                                 environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        base(kind, environment: environment) + "/netdiskfs"
    }

    public static func base(_ kind: Kind, environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        // The spec ignores relative values.
        if let value = environment[kind.variable], value.hasPrefix("/") { return value }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return home + "/" + kind.defaultRelative
    }
}
