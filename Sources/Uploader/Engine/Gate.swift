import Foundation

/// A one-shot event many threads can wait on (used only on FUSE and helper threads, never in a Task).
public final class Gate: @unchecked Sendable {
    private let condition = NSCondition()
    private var isOpen = false

    public init() {}

    public func wait() {
        condition.lock()
        while !isOpen { condition.wait() }
        condition.unlock()
    }

    public func open() {
        condition.lock()
        isOpen = true
        condition.broadcast()
        condition.unlock()
    }
}
