// This file owns a request's lifecycle as one state machine: its states, the events that move it, and the
// one table of legal transitions. `Request.handle(_:)` applies an event to the request's state word.

/// Where a read is in its life. Stored in ``Request``'s atomic state word, because one race is real:
/// cancellation (by the caller, or by shutdown) against the poller or a reaper taking a pending read.
/// Every other move is made by the one stage that owns the request at the time.
///
/// ```
///             didBecomeResident / wasClaimedByReaper
///   pending ────────────────────────────────────────► ready ──didFinish──► finished
///     │  ▲                                              │
///     │  └───────────────── wasEvicted ─────────────────┘
///     ├──didFinish (inside submit)──► finished
///     └──didCancel──► cancelled
/// ```
package enum RequestState: UInt8, CaseIterable, Sendable {
    /// Waiting in the poller for pages, or for a direct read's libaio completion.
    case pending
    /// Delivered to the sink (or claimed by a reaper); the reaper will copy, or return the direct result.
    case ready
    /// The result is final.
    case finished
    /// Cancelled by the caller or by shutdown; the result is -ECANCELED.
    case cancelled

    /// What happens to a request, named for the moment it happens.
    package enum Event: CaseIterable, Sendable {
        /// The read is ready for the reaper: every page is resident (the poller's pass, or submit found
        /// them all), the bounded wait gave up (the reaper then reads blocking), or a direct read ended.
        case didBecomeResident
        /// A reaper with nothing ready took a pending read from the poller, to wait for it in a pread.
        case wasClaimedByReaper
        /// The reaper's copy found pages evicted since the poller saw them: back to the poller.
        case wasEvicted
        /// The result is final: inside submit (cached, end of file, an error), or after the reaper's copy.
        case didFinish
        /// The caller, or shutdown, cancels the read.
        case didCancel
    }

    /// What the stage that raised an event must do next.
    package enum Action: Equatable, Sendable {
        /// Hand the request to its sink: it is ready for the reaper.
        case deliver
        /// The claiming reaper now owns the request and reads it with a blocking pread.
        case readBlocking
        /// Give the request back to the poller (its readahead is issued again).
        case returnToPoller
        /// Nothing: the result is final and the reaper reports it.
        case report
        /// Deliver the request as cancelled.
        case deliverCancellation
        /// Another event won a race for this request (a cancel, or a reaper's claim); leave it alone.
        case leave
        /// Too late to cancel: the read completes as usual.
        case completeAnyway
    }

    /// The transition table: the state `event` leads to from this one (nil: it stays) and what the
    /// caller does next, or nil if the event is illegal here, a bug in the engine.
    package func on(_ event: Event) -> (next: RequestState?, action: Action)? {
        switch (self, event) {
        case (.pending, .didBecomeResident): return (.ready, .deliver)
        case (.pending, .wasClaimedByReaper): return (.ready, .readBlocking)
        case (.pending, .didFinish): return (.finished, .report)
        case (.pending, .didCancel): return (.cancelled, .deliverCancellation)
        case (.ready, .wasEvicted): return (.pending, .returnToPoller)
        case (.ready, .didFinish): return (.finished, .report)
        // The races: a cancel or a reaper's claim moved the request first.
        case (.ready, .didBecomeResident), (.finished, .didBecomeResident), (.cancelled, .didBecomeResident):
            return (nil, .leave)
        case (.ready, .wasClaimedByReaper), (.finished, .wasClaimedByReaper), (.cancelled, .wasClaimedByReaper):
            return (nil, .leave)
        case (.ready, .didCancel), (.finished, .didCancel), (.cancelled, .didCancel):
            return (nil, .completeAnyway)
        // Only the owning stage evicts or finishes, and only once.
        case (.pending, .wasEvicted), (.finished, .wasEvicted), (.cancelled, .wasEvicted):
            return nil
        case (.finished, .didFinish), (.cancelled, .didFinish):
            return nil
        }
    }
}

extension Request {
    typealias State = RequestState

    var state: State { State(rawValue: sharedState.load(ordering: .acquiring))! }

    /// Applies `event` to the request's state by the table in ``RequestState/on(_:)`` and returns what the
    /// caller must do. A compare-and-swap, so an event that races another (cancel against the poller or a
    /// reaper's claim) sees the winner's state and gets ``RequestState/Action/leave`` or
    /// ``RequestState/Action/completeAnyway``. An illegal event traps: it means two stages thought they
    /// owned the request.
    @discardableResult
    func handle(_ event: State.Event) -> State.Action {
        var current = state
        while true {
            guard let (next, action) = current.on(event) else {
                preconditionFailure("request \(serial): \(event) is illegal in state \(current)")
            }
            guard let next else { return action }
            let (exchanged, found) = sharedState.compareExchange(
                expected: current.rawValue, desired: next.rawValue, ordering: .acquiringAndReleasing)
            if exchanged { return action }
            current = State(rawValue: found)!
        }
    }

    /// Records the final result and moves to ``RequestState/finished``.
    func finish(_ result: Int) {
        self.result = result
        handle(.didFinish)
    }
}
