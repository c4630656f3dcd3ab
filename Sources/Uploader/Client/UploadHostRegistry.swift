/// Remembers, per uploadid, the upload host locateupload gave and whether it came from the streaming precreate.
///
/// Every part of one uploadid must reach the same host, or create fails with errno 10. Concurrent first
/// parts of one uploadid share a single locateupload call. Entries are dropped after create, and the
/// table is bounded so abandoned uploads cannot grow it without end.
actor UploadHostRegistry {
    private var hosts: [String: String] = [:]
    private var locating: [String: Task<Result<String, NetdiskError>, Never>] = [:]
    private var streaming: Set<String> = []
    private var order: [String] = []
    private let capacity: Int

    init(capacity: Int = 4096) { self.capacity = capacity }

    func host(for uploadID: String,
              locate: @escaping @Sendable () async -> Result<String, NetdiskError>) async throws(NetdiskError) -> String {
        if let host = hosts[uploadID] { return host }
        if let task = locating[uploadID] { return try await task.value.get() }
        let task = Task { await locate() }
        locating[uploadID] = task
        let result = await task.value
        locating[uploadID] = nil
        if case .success(let host) = result {
            hosts[uploadID] = host
            remember(uploadID)
        }
        return try result.get()
    }

    func pinnedHost(for uploadID: String) -> String? { hosts[uploadID] }

    /// A host an earlier run used for this uploadid (from a resume journal): it wins over asking again.
    func pin(_ host: String, for uploadID: String) {
        if hosts[uploadID] == nil { remember(uploadID) }
        hosts[uploadID] = host
    }

    func markStreaming(_ uploadID: String) {
        streaming.insert(uploadID)
        remember(uploadID)
    }

    func isStreaming(_ uploadID: String) -> Bool { streaming.contains(uploadID) }

    func forget(_ uploadID: String) {
        hosts[uploadID] = nil
        streaming.remove(uploadID)
    }

    private func remember(_ uploadID: String) {
        order.append(uploadID)
        guard order.count > capacity * 2 else { return }
        // Compact: keep the newest `capacity` ids that are still known.
        let keep = Array(order.suffix(capacity))
        let keepSet = Set(keep)
        for id in order where !keepSet.contains(id) {
            hosts[id] = nil
            streaming.remove(id)
        }
        order = keep
    }
}
