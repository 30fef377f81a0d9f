// The request's lifecycle table (Sources/BufferedAIO/Engine/Request+State.swift) against the lifecycle
// written out independently here: every legal transition, every race that must leave the request alone,
// and every illegal event rejected.
import BufferedAIO
import Testing

@Suite("Request state machine")
struct RequestStateTests {
    typealias State = RequestState
    typealias Event = RequestState.Event
    typealias Action = RequestState.Action

    /// The legal moves, from docs/architecture.md's transition table.
    static let moves: [(State, Event, State, Action)] = [
        (.pending, .didBecomeResident, .ready, .deliver),
        (.pending, .wasClaimedByReaper, .ready, .readBlocking),
        (.pending, .didFinish, .finished, .report),
        (.pending, .didCancel, .cancelled, .deliverCancellation),
        (.ready, .wasEvicted, .pending, .returnToPoller),
        (.ready, .didFinish, .finished, .report),
    ]

    /// Events that can lose a race: they leave the state as it is.
    static let races: [(State, Event, Action)] = [
        (.ready, .didBecomeResident, .leave), (.finished, .didBecomeResident, .leave),
        (.cancelled, .didBecomeResident, .leave),
        (.ready, .wasClaimedByReaper, .leave), (.finished, .wasClaimedByReaper, .leave),
        (.cancelled, .wasClaimedByReaper, .leave),
        (.ready, .didCancel, .completeAnyway), (.finished, .didCancel, .completeAnyway),
        (.cancelled, .didCancel, .completeAnyway),
    ]

    @Test("every legal transition moves to the documented state with the documented action")
    func legalMoves() {
        for (state, event, next, action) in Self.moves {
            let result = state.on(event)
            #expect(result?.next == next, "\(state) on \(event)")
            #expect(result?.action == action, "\(state) on \(event)")
        }
    }

    @Test("an event that lost a race (to a cancel or a reaper's claim) leaves the state alone")
    func lostRaces() {
        for (state, event, action) in Self.races {
            let result = state.on(event)
            #expect(result != nil, "\(state) on \(event)")
            #expect(result?.next == nil, "\(state) on \(event)")
            #expect(result?.action == action, "\(state) on \(event)")
        }
    }

    @Test("every other event is illegal: eviction outside the reaper, finishing twice, finishing a cancelled read")
    func illegalEvents() {
        var illegal = 0
        for state in State.allCases {
            for event in Event.allCases {
                let listed =
                    Self.moves.contains { $0.0 == state && $0.1 == event }
                    || Self.races.contains { $0.0 == state && $0.1 == event }
                if listed { continue }
                #expect(state.on(event) == nil, "\(state) on \(event) should be illegal")
                illegal += 1
            }
        }
        // pending/ready/finished/cancelled × 5 events, minus 6 moves and 9 races.
        #expect(illegal == 5)
    }

    @Test("finished and cancelled are final: no event leads out of them")
    func finalStates() {
        for state in [State.finished, .cancelled] {
            for event in Event.allCases {
                #expect(state.on(event)?.next == nil, "\(state) on \(event)")
            }
        }
    }

    @Test("only pending can be cancelled, and only pending becomes ready")
    func cancelRace() {
        for state in State.allCases {
            #expect((state.on(.didCancel)?.next == .cancelled) == (state == .pending))
            #expect((state.on(.didBecomeResident)?.next == .ready) == (state == .pending))
            #expect((state.on(.wasClaimedByReaper)?.next == .ready) == (state == .pending))
        }
    }
}
