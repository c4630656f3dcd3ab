import Foundation
import Synchronization
import Uploader

/// One open(2) of a file: a reader of a committed remote file, a write handle on a `PathWriter`,
/// or a read-only share of a file someone else is writing.
///
/// Why the distinction matters: only a write handle may commit. A reader that closes (`head`,
/// `file`, an indexer) must never commit, detach or shorten the writer's file (DESIGN.md, "Write
/// semantics"), and only the process that opened a write handle commits at its close, so a child
/// closing an inherited descriptor (`{ a; b; } > f`) does not publish a partial file.
final class OpenFile: Sendable {
    enum Access: Sendable { case read, write }

    let reader: RemoteFileReader?
    let writer: PathWriter?
    let access: Access
    /// The thread group (process) that opened the handle: its close is the commit point.
    let opener: pid_t
    private let state = Mutex(State())

    private struct State {
        var openerClosed = false
        /// A read-only share reads the committed file once the writer has committed.
        var committedReader: RemoteFileReader?
    }

    init(reader: RemoteFileReader) {
        self.reader = reader
        self.writer = nil
        self.access = .read
        self.opener = 0
    }

    init(writer: PathWriter, access: Access, opener: pid_t) {
        self.reader = nil
        self.writer = writer
        self.access = access
        self.opener = opener
    }

    var isWriteHandle: Bool { writer != nil && access == .write }

    /// True once the opener has closed its descriptor (children may still hold copies).
    var openerClosed: Bool { state.withLock { $0.openerClosed } }

    func markOpenerClosed() { state.withLock { $0.openerClosed = true } }

    /// The reader of the committed version, made on first use.
    func committedReader(for entry: RemoteEntry, make: (RemoteEntry) -> RemoteFileReader) -> RemoteFileReader {
        state.withLock { state in
            if let reader = state.committedReader { return reader }
            let reader = make(entry)
            state.committedReader = reader
            return reader
        }
    }
}
