import Foundation

/// Parts of a stream already handed to the uploader that readers may still read.
///
/// Why: programs that sniff a file being written (`file`, thumbnailers, indexers) read its head and
/// its tail (libmagic 5.44 reads 7 MiB at each end, more than a 4 MiB slice). Bytes already sent are
/// in Baidu's staging area only, so without these a read of them would move the whole file to the
/// cached path and spool it to disk. What stays readable:
/// - every part still uploading (its buffer is alive anyway);
/// - the first parts (at least 8 MiB) until the commit;
/// - the latest parts (at least 12 MiB: a tail read begins at the size `file` saw, and the stream
///   moves on while it reads the head).
///
/// Each part's buffer returns to the pool only when both its upload and the readers are done
/// with it. A part whose upload failed in a way that ends only its uploadid (``PartOutcome/retry``)
/// is kept too, until the session sends it again under a fresh one (``resubmit(count:)``) or gives
/// up (``abandonAll()``). The pool's limit counts the head and the tail, so keeping them never makes a writer
/// wait for itself. When the shared memory budget is short, the tail is let go; the head too when
/// the whole budget cannot hold it beside ``minimumInFlight`` parts on the wire (``headYields``),
/// or when nothing else is left to give.
final class SentParts: @unchecked Sendable {
    private final class Part: @unchecked Sendable {
        /// Both dropped the moment the part goes back: a dead part stays in `parts` until the next
        /// `add`, and holding its buffer (here or in `giveBack`'s capture) kept one slice more than
        /// the budget resident while the writer filled the next one (a whole slice: 16 MiB at SVIP then).
        private var buffer: SectionBuffer?
        let length: Int
        private let lock = NSLock()
        /// Acknowledged by the server under the current uploadid.
        private var uploaded = false
        /// A pipeline has it (queued or on the wire).
        private var onWire = true
        /// Kept after an upload failure, for a restart under a fresh uploadid.
        private var kept = false
        /// The stream ended: a part still on the wire is freed when it ends, whatever its outcome.
        private var abandoned = false
        private var held: Bool
        private var alive = true
        private var giveBack: (@Sendable () -> Void)?

        init(buffer: SectionBuffer, length: Int, held: Bool, giveBack: @escaping @Sendable () -> Void) {
            self.buffer = buffer
            self.length = length
            self.held = held
            self.giveBack = giveBack
        }

        var isAlive: Bool { lock.withLock { alive } }
        var isUploading: Bool { lock.withLock { alive && onWire } }

        /// Copies `count` bytes from `offset` in the part; false once its buffer went back.
        func copy(from offset: Int, count: Int, to target: UnsafeMutableRawPointer) -> Bool {
            lock.withLock {
                guard alive, let buffer, offset + count <= length else { return false }
                target.copyMemory(from: buffer.base + offset, byteCount: count)
                return true
            }
        }

        func uploadEnded(_ outcome: PartOutcome) {
            finish {
                onWire = false
                uploaded = outcome == .acknowledged
                kept = outcome == .retry && !abandoned
            }
        }
        func letGo() { finish { held = false } }
        func abandon() { finish { abandoned = true; kept = false; held = false } }

        /// Marks the part as on the wire again (a restart); false once its buffer went back.
        func resend() -> PartBytes? {
            lock.withLock {
                guard alive, !onWire, !abandoned, let buffer else { return nil }
                uploaded = false
                kept = false
                onWire = true
                return PartBytes(base: UnsafeRawPointer(buffer.base), count: length)
            }
        }

        /// Its bytes can go again: alive and not on the wire.
        var canResend: Bool { lock.withLock { alive && !onWire && !abandoned } }

        private func finish(_ change: () -> Void) {
            let release = lock.withLock { () -> (@Sendable () -> Void)? in
                change()
                guard alive, !onWire, !held, !kept else { return nil }
                alive = false
                buffer = nil
                defer { giveBack = nil }
                return giveBack
            }
            release?()
        }
    }

    /// Set once any part went back. Read without the session lock (fsync asks it).
    private final class GoneFlag: @unchecked Sendable {
        private let lock = NSLock()
        private var value = false
        func set() { lock.withLock { value = true } }
        var isSet: Bool { lock.withLock { value } }
    }

    let headParts: Int
    let tailParts: Int
    private let gone = GoneFlag()
    private var parts: [Int: Part] = [:]
    /// Partseqs held for the tail, oldest first.
    private var tail: [Int] = []
    private var keeping = true

    static let headBytes = 8 << 20
    /// Parts on the wire a stream must be able to have beside its head for the head to be worth
    /// keeping. Why 4: at SVIP's slices (16 MiB then, 12 MiB now) the default 64 MiB budget holds 4
    /// (now 5) slices; with one pinned for the head and one filling, 2 parts in flight carried
    /// 206 MB/s at 100 ms per call against 301 MB/s at 0 ms. At normal and VIP the budget keeps 6 to 13 on the wire beside it.
    static let minimumInFlight = 4
    static let tailBytes = 12 << 20

    /// Parts kept at the head for a slice size: enough for ``headBytes``, one or two.
    static func headParts(slice: Int) -> Int { min(2, max(1, (headBytes + slice - 1) / slice)) }
    /// Parts kept at the tail: enough for ``tailBytes``, and two or three (a 7 MiB read from the
    /// end may straddle two parts of any size).
    static func tailParts(slice: Int) -> Int { min(3, max(2, (tailBytes + slice - 1) / slice)) }
    /// Buffers a stream's pool holds beyond its uploads for these.
    static func extraBuffers(slice: Int) -> Int { headParts(slice: slice) + tailParts(slice: slice) }

    /// The head goes back at the budget's first shortage, not only once nothing else is left.
    let headYields: Bool

    /// `budgetBuffers`: slices the whole shared budget holds (nil: as many as wanted).
    init(slice: Int, budgetBuffers: Int? = nil) {
        let head = Self.headParts(slice: slice)
        headParts = head
        tailParts = Self.tailParts(slice: slice)
        headYields = budgetBuffers.map { $0 < head + Self.minimumInFlight + 1 } ?? false
    }

    /// Records a part handed to the uploader; returns what the uploader calls when it is done.
    func add(partseq: Int, buffer: SectionBuffer, length: Int,
             giveBack: @escaping @Sendable () -> Void) -> @Sendable (PartOutcome) -> Void {
        parts = parts.filter { $0.value.isAlive }
        let held = keeping
        let gone = self.gone
        let part = Part(buffer: buffer, length: length, held: held, giveBack: { gone.set(); giveBack() })
        parts[partseq] = part
        if held && partseq >= headParts {
            tail.append(partseq)
            if tail.count > tailParts { parts[tail.removeFirst()]?.letGo() }
        }
        return { part.uploadEnded($0) }
    }

    /// No part sent so far has gone back, so a fresh uploadid could still be given every one
    /// (acknowledged parts go back once past the head and the tail). Safe without the session lock.
    var holdsEverySentPart: Bool { !gone.isSet }

    /// Every part below `count` can go again (see ``resubmit(count:)``): none is gone or still on
    /// the wire. Asked once the failed pipeline's workers have all ended.
    func canResubmit(count: Int) -> Bool {
        (0..<count).allSatisfy { parts[$0]?.canResend == true }
    }

    /// The parts below `count`, marked as on the wire again, each with what its new upload calls
    /// when it ends; nil (and nothing marked) when one of them is gone.
    func resubmit(count: Int) -> [(partseq: Int, bytes: PartBytes, release: @Sendable (PartOutcome) -> Void)]? {
        guard canResubmit(count: count) else { return nil }
        return (0..<count).compactMap { partseq in
            guard let part = parts[partseq], let bytes = part.resend() else { return nil }
            return (partseq, bytes, { part.uploadEnded($0) })
        }
    }

    /// The stream ended (committed, fell back, failed or was cancelled): nothing is kept for readers
    /// or for a restart any more; parts still on the wire go back when they end.
    func abandonAll() {
        letGoOfAll()
        for part in parts.values { part.abandon() }
    }

    /// Copies bytes of a sent part; false when that part is no longer in memory.
    func copy(part: Int, from offset: Int, count: Int, to target: UnsafeMutableRawPointer) -> Bool {
        parts[part]?.copy(from: offset, count: count, to: target) ?? false
    }

    var holdsAny: Bool { keeping && !parts.isEmpty }
    /// Parts whose upload has not finished (tests wait on it).
    var uploading: Int { parts.values.filter(\.isUploading).count }
    var holdsTail: Bool { !tail.isEmpty }

    /// The shared budget is short: the tail goes back as its uploads finish (readable until then).
    func letGoOfTail() {
        for partseq in tail { parts[partseq]?.letGo() }
        tail.removeAll()
    }

    /// Commit, fallback, cancel or memory pressure: nothing is held for readers any more.
    func letGoOfAll() {
        keeping = false
        tail.removeAll()
        for part in parts.values { part.letGo() }
    }
}
