import Foundation

/// Starts a dedicated thread that `top -H`, `ps -L` and `/proc/PID/task/*/comm` show by name.
///
/// Why not `Thread.name`: on Linux, Foundation applies a name only once `start()` has stored the
/// new pthread, so a name set before `start()` is dropped and one set from inside the thread races
/// with that store (CI saw an upload worker stay unnamed for 30 s). Names longer than the kernel's
/// 15 bytes made `pthread_setname_np` fail outright; this cuts them to fit, at a character.
public enum NamedThread {
    /// The kernel's limit on a thread name, without its terminating NUL.
    public static let maxNameBytes = 15

    @discardableResult
    public static func start(_ name: String, stackSize: Int? = nil,
                             _ body: @escaping @Sendable () -> Void) -> Thread {
        let fitted = fit(name)
        let thread = Thread {
            nameCurrentThread(fitted)
            body()
        }
        if let stackSize { thread.stackSize = stackSize }
        thread.start()
        return thread
    }

    /// What `pthread_setname_np` does, which Glibc's Swift module leaves out (it is a GNU
    /// extension): proc(5) lets a thread write its own name to `/proc/thread-self/comm`.
    private static func nameCurrentThread(_ name: String) {
        let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = name.withCString { write(fd, $0, strlen($0)) }
        close(fd)
    }

    /// `name` cut to ``maxNameBytes`` of UTF-8 at a character boundary.
    static func fit(_ name: String) -> String {
        var fitted = ""
        for character in name {
            guard fitted.utf8.count + character.utf8.count <= maxNameBytes else { break }
            fitted.append(character)
        }
        return fitted
    }
}
