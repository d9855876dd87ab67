import Synchronization

/// Page-aligned memory for I/O, registered with an engine's ring when a slot is free so that
/// requests into it skip the kernel's per-request page pinning (READ_FIXED / WRITE_FIXED).
/// The alignment also satisfies O_DIRECT. Freed, and its slot emptied, when the value goes.
///
/// `@unchecked Sendable`: every field is a `let`; the bytes at `base` are the holder's to order, as any buffer pointer's,
/// and the slot goes back through `BufferRegistry`'s `state` Mutex.
public final class IOBuffer: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let count: Int
    let registration: BufferRegistry.Slot?

    init(count: Int, registry: BufferRegistry) {
        self.count = count
        base = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: IOBuffer.alignment)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: max(count, 1))
        registration = registry.register(base: base, count: count)
    }

    deinit {
        if let registration { registration.registry.release(registration) }
        base.deallocate()
    }

    /// The alignment every buffer has: a page, which covers any device's O_DIRECT rule.
    public static let alignment = 4096

    /// Whether requests into this buffer use READ_FIXED / WRITE_FIXED.
    public var isRegistered: Bool { registration != nil }

    public var bytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: base, count: count) }
}

/// The ring's table of registered buffers: which slots are taken and by which address range,
/// so that a request can be matched to the registered buffer it lies in.
final class BufferRegistry: Sendable {
    struct Slot: Sendable {
        let index: UInt32
        let start: UInt
        let end: UInt
        let registry: BufferRegistry
    }

    private struct State {
        var free: [UInt32]
        /// Registered ranges by start address, for lookups.
        var ranges: [(start: UInt, end: UInt, index: UInt32)] = []
    }

    private let ring: IOUring
    private let state: Mutex<State>

    init(ring: IOUring, capacity: UInt32) {
        self.ring = ring
        state = Mutex(State(free: Array((0..<capacity).reversed())))
    }

    /// Registers the range in a free slot; nil when the table is full or the kernel refuses
    /// (the buffer then works unregistered, only a little slower).
    func register(base: UnsafeMutableRawPointer, count: Int) -> Slot? {
        guard count > 0, let index = state.withLock({ $0.free.popLast() }) else { return nil }
        do {
            try ring.updateRegisteredBuffer(slot: index, base: base, length: count)
        } catch {
            state.withLock { $0.free.append(index) }
            return nil
        }
        let start = UInt(bitPattern: base)
        state.withLock { state in
            let position = state.ranges.firstIndex { $0.start > start } ?? state.ranges.count
            state.ranges.insert((start, start + UInt(count), index), at: position)
        }
        return Slot(index: index, start: start, end: start + UInt(count), registry: self)
    }

    func release(_ slot: Slot) {
        state.withLock { state in
            state.ranges.removeAll { $0.index == slot.index }
        }
        try? ring.updateRegisteredBuffer(slot: slot.index, base: nil, length: 0)
        state.withLock { $0.free.append(slot.index) }
    }

    /// The slot whose buffer holds all of [address, address + length), if any.
    func slot(containing address: UInt, length: Int) -> UInt32? {
        state.withLock { state in
            var low = 0, high = state.ranges.count
            while low < high {
                let middle = (low + high) / 2
                if state.ranges[middle].start <= address { low = middle + 1 } else { high = middle }
            }
            guard low > 0 else { return nil }
            let candidate = state.ranges[low - 1]
            return address + UInt(length) <= candidate.end ? candidate.index : nil
        }
    }
}
