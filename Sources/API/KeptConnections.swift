/// The blocking client's idle connections, each with the order it was opened in. The next
/// request takes the earliest opened of them, so that a client with connections to spare
/// keeps using the same few: the daemon gives the first connections it accepts event loops
/// of their own (`ConnectionLoops`), on which a run needs no hop to a container thread and
/// back. (Taken last in, first out, they shuffled: after each moment of three launches in
/// flight the one that ended last went on top, and only a sixth to a third of a load run's
/// launches went over a connection with a loop of its own.)
struct KeptConnections: Sendable {
    struct Connection: Sendable {
        let fd: Int32
        /// Its place in the order the client opened its connections.
        let opened: UInt64
    }

    /// Latest opened first: the earliest is taken from the end.
    private var idle: [Connection] = []
    private var openedSoFar: UInt64 = 0

    var count: Int { idle.count }
    var descriptors: [Int32] { idle.map(\.fd) }

    /// A newly opened connection's place in the order.
    mutating func opened(_ fd: Int32) -> Connection {
        openedSoFar += 1
        return Connection(fd: fd, opened: openedSoFar)
    }

    /// The earliest opened idle connection, now no longer idle.
    mutating func take() -> Connection? { idle.popLast() }

    /// `connection` is idle again.
    mutating func put(_ connection: Connection) {
        // Binary search for the first whose order is below it (the list falls from start to end).
        var low = 0, high = idle.count
        while low < high {
            let middle = (low + high) / 2
            if idle[middle].opened > connection.opened { low = middle + 1 } else { high = middle }
        }
        idle.insert(connection, at: low)
    }
}
