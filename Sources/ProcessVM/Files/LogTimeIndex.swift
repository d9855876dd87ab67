import HostSystem
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// When a container's output was written: beside each log file (stdout.log, stderr.log) a
/// time index (stdout.times, stderr.times) of fixed-size records that the engine appends as
/// the guest's writes land. The guest only ever writes bytes to the log; it never reaches
/// the index.
///
/// A record is 16 bytes, little-endian: the log's size just before a write (UInt64) and the
/// wall-clock time read just before that size (Int64 nanoseconds since 1970). It says that
/// every byte at or after that offset was written at or after that time, which stays true
/// whatever other writers (the container's forked processes, each a VM of its own) append
/// meanwhile. A write makes a record only when the clock has moved on by `granularity` since
/// the stream's last record, or when the container's other stream was written since (so
/// that stdout and stderr can be put back in order): a byte's time, the time of the last
/// record at or before it, is at most `granularity` early, and a burst of writes within a
/// millisecond costs no record at all.
public final class LogTimeIndex: Sendable {
    public static let recordSize = 16
    /// How far the clock moves on before a write to the same stream makes a new record.
    public static let granularityNanoseconds: Int64 = 1_000_000

    /// The index file, opened O_APPEND: each record is one write(2) of 16 bytes. Owned here
    /// (closed with the index) or borrowed from `keeper`, which this index keeps alive.
    private let file: Int32
    private let owned: Bool
    private let keeper: (any AnyObject & Sendable)?
    /// 1 for stdout, 2 for stderr (the guest's descriptor numbers): which of the timeline's
    /// streams this is.
    private let stream: Int
    private let timeline: LogTimeline
    /// The time of this stream's last record (nanoseconds since 1970), or Int64.min.
    private let lastRecord = Atomic<Int64>(Int64.min)

    /// Opens (creating or emptying) the index at `path` for `stream` (1 or 2) of `timeline`.
    /// `empty`: the file is known to exist empty, so it is opened without O_TRUNC (which
    /// changes the inode, a journalled write, even for an empty file).
    public init(path: String, stream: Int, timeline: LogTimeline, empty: Bool = false) throws(SystemError) {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (empty ? 0 : O_TRUNC), 0o600)
        guard fd >= 0 else { throw SystemError(call: "open(\(path))", errno: errno) }
        file = fd
        (owned, keeper) = (true, nil)
        self.stream = stream
        self.timeline = timeline
    }

    /// An index written through `descriptor` (opened O_APPEND), which `keeper` holds open: it
    /// stays alive as long as this index.
    public init(descriptor: Int32, keeper: any AnyObject & Sendable, stream: Int, timeline: LogTimeline) {
        (file, owned, self.keeper) = (descriptor, false, keeper)
        self.stream = stream
        self.timeline = timeline
    }

    deinit {
        if owned { close(file) }
    }

    /// Called by the engine before it writes guest data to `log`, a host descriptor of this
    /// stream's log file: one clock read and one atomic load in the common case; an fstat
    /// and a 16-byte write when a record is due. A record that cannot be written is left out
    /// (the bytes then take the previous record's time).
    func willWrite(to log: Int32) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let nanoseconds = Int64(now.tv_sec) &* 1_000_000_000 &+ Int64(now.tv_nsec)
        let switched = timeline.lastStream.load(ordering: .relaxed) != stream
        if switched { timeline.lastStream.store(stream, ordering: .relaxed) }
        guard switched || nanoseconds &- lastRecord.load(ordering: .relaxed) >= Self.granularityNanoseconds else { return }
        lastRecord.store(nanoseconds, ordering: .relaxed)
        var info = stat()
        guard fstat(log, &info) == 0 else { return }
        var record = (UInt64(info.st_size).littleEndian, UInt64(bitPattern: nanoseconds).littleEndian)
        // unsafe: the tuple is two UInt64s, 16 contiguous bytes, alive for the call.
        _ = withUnsafeBytes(of: &record) { Glibc.write(file, $0.baseAddress, Self.recordSize) }
    }
}

/// What a container's two time indexes share: which stream was written last, so that a
/// write after the other stream's makes a record whatever the granularity.
public final class LogTimeline: Sendable {
    let lastStream = Atomic<Int>(0)
    public init() {}
}

/// A time index read back: for each offset of its log, the time the byte there was written
/// (at most the granularity early). Tolerates what a killed writer leaves: a partial trailing
/// record waits for the rest (or is ignored), and records out of order (two writers
/// racing) are put in order.
public struct LogTimes: Sendable {
    /// Record offsets, ascending; each record's own time; and for each the latest time of any
    /// record at or before it (a byte was written no earlier than any record before it says).
    private var offsets: [UInt64] = []
    private var recorded: [Int64] = []
    private var latest: [Int64] = []
    /// The start of a record not read whole yet.
    private var pending: [UInt8] = []

    public init() {}

    /// The records in `bytes`, the contents of an index file.
    public init(_ bytes: [UInt8]) {
        append(bytes)
    }

    /// Reads the index at `path` (empty when there is none).
    public init(path: String) {
        self.init()
        _ = read(path, from: 0)
    }

    public var count: Int { offsets.count }

    /// Reads what the index file at `path` holds from byte `start` (what was read before),
    /// returning where the next read starts.
    public mutating func read(_ path: String, from start: Int) -> Int {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return start }
        defer { close(fd) }
        var position = start
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = pread(fd, &chunk, chunk.count, off_t(position))
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            append(chunk[0..<count])
            position += count
        }
        return position
    }

    /// Takes more of the index file's bytes, in order.
    public mutating func append<Bytes: Collection<UInt8>>(_ bytes: Bytes) {
        pending.append(contentsOf: bytes)
        let count = pending.count / LogTimeIndex.recordSize
        guard count > 0 else { return }
        // unsafe: base + 16 <= count * recordSize <= pending.count for every record; loadUnaligned needs no alignment.
        let records = pending.withUnsafeBytes { raw in
            (0..<count).map { index in
                let base = index * LogTimeIndex.recordSize
                return (UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: base, as: UInt64.self)),
                        Int64(littleEndian: raw.loadUnaligned(fromByteOffset: base + 8, as: Int64.self)))
            }
        }
        pending.removeFirst(count * LogTimeIndex.recordSize)
        for (offset, time) in records { insert(offset, time) }
    }

    private mutating func insert(_ offset: UInt64, _ time: Int64) {
        if offsets.last.map({ $0 <= offset }) ?? true {
            offsets.append(offset)
            recorded.append(time)
            latest.append(max(time, latest.last ?? Int64.min))
            return
        }
        // Out of order: in place after the records at or before `offset`, then the running
        // latest times from there.
        let position = Self.upperBound(offsets, offset)
        offsets.insert(offset, at: position)
        recorded.insert(time, at: position)
        latest.insert(time, at: position)
        for index in position..<latest.count {
            latest[index] = max(recorded[index], index > 0 ? latest[index - 1] : Int64.min)
        }
    }

    /// The index of the first element greater than `value` in ascending `values`.
    private static func upperBound(_ values: [UInt64], _ value: UInt64) -> Int {
        var low = 0, high = values.count
        while low < high {
            let middle = (low + high) / 2
            if values[middle] <= value { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// The time (nanoseconds since 1970) the byte at `offset` was written, or nil when no
    /// record is at or before it.
    public func time(at offset: UInt64) -> Int64? {
        let position = Self.upperBound(offsets, offset)
        return position == 0 ? nil : latest[position - 1]
    }
}
