/// The Baidu-compatible server used by tests, benchmarks and `--emulator` mode.
public enum NetdiskEmulatorInfo {
    public static let name = "netdiskfs emulator"
}
