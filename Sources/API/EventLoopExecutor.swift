import HummingbirdCore
import Logging
import NIOCore

/// Runs a connection's task on its channel's event loop thread instead of the cooperative
/// pool (the agent's connections here, and the VCH's requests). A request then crosses threads only where the engine must (its KVM and container
/// threads) and back: before, each request also went from the event loop that read it to a
/// pool thread and its answer back to the event loop, two more wake-ups, each of which, on
/// this kind of machine, is an exit of the nested hypervisor when the woken CPU was idle.
/// Handlers must not block: a blocked handler holds up the other connections of its loop (as
/// it held a pool thread before; both are as many as the cores).
public final class EventLoopExecutor: TaskExecutor {
    public let eventLoop: any EventLoop

    public init(_ eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// A server child channel whose connections' tasks prefer their event loop's executor.
struct OnTheEventLoop<Inner: ServerChildChannel>: ServerChildChannel {
    typealias Value = Inner.Value
    let inner: Inner

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        inner.setup(channel: channel, logger: logger)
    }

    func handle(value: Value, logger: Logger) async {
        await withTaskExecutorPreference(EventLoopExecutor(value.channel.eventLoop)) {
            await inner.handle(value: value, logger: logger)
        }
    }
}
