import Foundation

/// Runs an async client call from a dedicated (non-pool) thread and blocks that thread until it ends.
///
/// The engine's workers and the mount's FUSE threads are foreign threads that may block; the
/// async call itself runs on the cooperative pool, which never waits on anything here.
/// `meanwhile` runs on the calling thread once the call's task is started, before the wait (a part's
/// hash while the part goes out; on a busy machine the hash may end before the first byte is sent).
func awaitBlocking<T: Sendable>(_ operation: @escaping @Sendable () async throws(NetdiskError) -> T,
                                meanwhile: () -> Void = {}) throws(NetdiskError) -> T {
    let box = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        do throws(NetdiskError) {
            box.set(.success(try await operation()))
        } catch {
            box.set(.failure(error))
        }
        done.signal()
    }
    meanwhile()
    done.wait()
    return try box.get()
}

private final class ResultBox<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var result: Result<T, NetdiskError>?
    func set(_ value: Result<T, NetdiskError>) { lock.lock(); result = value; lock.unlock() }
    func get() throws(NetdiskError) -> T {
        lock.lock(); defer { lock.unlock() }
        return try result!.get()
    }
}

/// Runs blocking work (file I/O, a whole upload) on a dedicated thread and awaits it from async code
/// without occupying a cooperative-pool thread.
public func runOnDedicatedThread<T: Sendable>(name: String = "nd.engine",
                                              _ work: @escaping @Sendable () throws(NetdiskError) -> T) async throws(NetdiskError) -> T {
    let result: Result<T, NetdiskError> = await withCheckedContinuation { continuation in
        NamedThread.start(name, stackSize: 1 << 20) {
            do throws(NetdiskError) {
                continuation.resume(returning: .success(try work()))
            } catch {
                continuation.resume(returning: .failure(error))
            }
        }
    }
    return try result.get()
}

/// Sleeps the current dedicated thread.
func sleepSeconds(_ seconds: Double) {
    guard seconds > 0 else { return }
    usleep(UInt32(min(seconds, 60) * 1_000_000))
}
