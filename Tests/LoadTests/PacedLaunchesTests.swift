@testable import Load
import CShims
import Foundation
import Synchronization
import TestSupport
import Testing

/// The open loop's launch threads (`PacedLaunches`): each arrival launched once, not before it
/// is due, by threads made ahead; one more thread when every thread is busy as an arrival
/// comes due; none past the cap, where the arrival waits and the wait is counted.
@Suite struct PacedLaunchesTests {
    /// A driver whose launches note their thread and start time, and hold until `release`
    /// (or for `hold` seconds), then finish.
    final class HeldDriver: LaunchDriver {
        struct Launched: Sendable {
            let index: Int
            let thread: Int32
            let late: Duration
        }
        let launched = Mutex<[Launched]>([])
        let release = DispatchSemaphore(value: 0)
        let holdsUntilReleased: Bool
        let hold: Duration

        init(holdsUntilReleased: Bool = false, hold: Duration = .zero) {
            self.holdsUntilReleased = holdsUntilReleased
            self.hold = hold
        }

        func launch(_ arrival: LoadSchedule.Arrival, due: ContinuousClock.Instant, recorder: LoadRecorder) {
            let record = recorder.launched(due: due, entry: arrival.entry)
            let started = ContinuousClock.now
            launched.withLock { $0.append(Launched(index: Int((arrival.offset * 1000).rounded()), thread: Int32(cshims_thread_id()), late: started - due)) }
            if holdsUntilReleased { release.wait() } else if hold > .zero { LaunchLoop.sleep(until: started + hold) }
            recorder.finished(record, at: .now)
        }

        func releaseAll() {}
    }

    /// Arrivals `offsetsMs` milliseconds after the start, of entry 0; each noted by its offset.
    static func arrivals(_ offsetsMs: [Int]) -> [LoadSchedule.Arrival] {
        offsetsMs.map { LoadSchedule.Arrival(offset: Double($0) / 1000, entry: 0) }
    }

    @Test func eachArrivalIsLaunchedOnceWhenDueOnThreadsMadeAhead() {
        let before = BodiesAtOnce.processThreads()
        let paced = PacedLaunches(warm: 3)
        #expect(paced.count == 3)
        usleep(50_000)
        let made = BodiesAtOnce.processThreads().subtracting(before)
        let driver = HeldDriver()
        let recorder = LoadRecorder()
        let inFlight = DispatchGroup()
        let offsets = Array(stride(from: 10, through: 200, by: 10))
        paced.launch(Self.arrivals(offsets), maxThreads: 8, driver: driver, recorder: recorder, inFlight: inFlight)
        #expect(inFlight.wait(timeout: .now() + 10) == .success)
        let launched = driver.launched.withLock { $0 }
        #expect(launched.map(\.index).sorted() == offsets, "each arrival once")
        #expect(launched.allSatisfy { $0.late >= .zero }, "none before it was due")
        // Short launches 10 ms apart: the three made ahead took them all, and no thread was made.
        #expect(Set(launched.map(\.thread)).isSubset(of: made), "ran on \(Set(launched.map(\.thread))), made ahead \(made)")
        #expect(recorder.side(name: "t", offeredRate: nil, elapsed: 1).schedulerStalls == 0)
    }

    @Test func aThreadIsMadeWhenEveryThreadIsBusyAsAnArrivalComesDue() {
        let paced = PacedLaunches(warm: 1)
        let driver = HeldDriver(holdsUntilReleased: true)
        let recorder = LoadRecorder()
        let inFlight = DispatchGroup()
        // Three arrivals 100 ms apart, each held until all three have begun: only a thread each lets them.
        let launching = Thread {
            paced.launch(Self.arrivals([0, 100, 200]), maxThreads: 8, driver: driver, recorder: recorder, inFlight: inFlight)
        }
        launching.start()
        var begun = 0
        for _ in 0..<500 where begun < 3 {
            begun = driver.launched.withLock { $0.count }
            usleep(10_000)
        }
        #expect(begun == 3)
        #expect(paced.count >= 3)
        for _ in 0..<3 { driver.release.signal() }
        #expect(inFlight.wait(timeout: .now() + 10) == .success)
        let launched = driver.launched.withLock { $0 }
        #expect(Set(launched.map(\.thread)).count == 3)
        // Each began before the next was due: the next thread was there in time (on a loaded
        // host a thread may wake tens of milliseconds late, never a whole 100 ms interval here).
        #expect(launched.allSatisfy { $0.late < .milliseconds(90) }, "\(launched.map(\.late))")
    }

    @Test func pastTheCapAnArrivalWaitsForAThreadAndTheWaitIsCounted() {
        let paced = PacedLaunches(warm: 1)
        let driver = HeldDriver(hold: .milliseconds(100))
        let recorder = LoadRecorder()
        let inFlight = DispatchGroup()
        // Four due at once, two threads at most, each launch 100 ms: two wait their turn.
        paced.launch(Self.arrivals([0, 0, 0, 0]), maxThreads: 2, driver: driver, recorder: recorder, inFlight: inFlight)
        #expect(inFlight.wait(timeout: .now() + 10) == .success)
        let launched = driver.launched.withLock { $0 }
        #expect(launched.count == 4)
        #expect(Set(launched.map(\.thread)).count == 2)
        // The two that waited for a thread began after a launch had ended (the first two may be late too on a loaded host).
        #expect(launched.filter { $0.late >= .milliseconds(90) }.count >= 2, "\(launched.map(\.late))")
        #expect(recorder.side(name: "t", offeredRate: nil, elapsed: 1).schedulerStalls >= 1)
    }
}
