import Dispatch
import Uploader

/// Runs async client calls from libfuse's worker threads.
///
/// FUSE callbacks arrive on libfuse's own pthreads, never on Swift's cooperative pool, so parking
/// such a thread on a semaphore while a Task does the async work is safe. Never call this from
/// inside a Task: that would block a cooperative thread.
enum Blocking {
    private final class Box<T>: @unchecked Sendable {
        var result: Result<T, NetdiskError>?
    }

    static func await<T: Sendable>(_ operation: @escaping @Sendable () async throws(NetdiskError) -> T) throws(NetdiskError) -> T {
        let box = Box<T>()
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            do throws(NetdiskError) {
                box.result = .success(try await operation())
            } catch {
                box.result = .failure(error)
            }
            done.signal()
        }
        done.wait()
        return try box.result!.get()
    }
}
