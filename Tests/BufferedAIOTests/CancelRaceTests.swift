// cancel(tag:) against a read whose pages were all resident by the end of submit (issue 13's soak found two
// events for one such read: the request went to the ready queue still marked pending, so cancel(tag:)
// took it as well, and the second copy wrote a buffer the caller had freed after the first event).
import BufferedAIO
import Glibc
import TestSupport
import Testing

@Suite("Cancel races", .serialized, .enabled(if: Scratch.available, Scratch.skipReason), .timeLimit(.minutes(3)))
struct CancelRaceTests {
    @Test("every read gives exactly one event, cancelled or not, when reads are cancelled right after submit")
    func oneEventPerRead() throws {
        let file = try PatternFile(size: 8 << 20, name: "cancelrace")
        let reads = 4
        var cancels = 0
        for round in 0..<100 {
            // Evicted, so some reads are still pending when cancelled and some became ready during submit.
            file.evict()
            let context = try IOContext(capacity: 8)
            defer { context.close() }
            let buffers = (0..<reads).map { _ in ReadBuffer(1 << 20, alignment: 4096) }
            let requests = (0..<reads).map {
                ReadRequest(descriptor: file.fd, offset: Int64($0) << 21, into: buffers[$0].bytes, tag: UInt64($0))
            }
            #expect(try context.submit(requests) == reads)
            let cancelled = UInt64(round % reads)
            if context.cancel(tag: cancelled) { cancels += 1 }
            var tags: [UInt64] = []
            while tags.count < reads {
                let events = try context.getEvents(minimum: 1, maximum: reads, timeout: .seconds(30))
                try #require(!events.isEmpty, "round \(round): no event within 30 s")
                for event in events {
                    tags.append(event.tag)
                    if case .success(let count) = event.result {
                        #expect(buffers[Int(event.tag)].prefix(count) == file.expected(Int(event.tag) << 21, 1 << 20))
                    }
                }
            }
            let extra = try context.getEvents(minimum: 0, maximum: reads, timeout: .milliseconds(20))
            #expect(Set(tags).count == reads && extra.isEmpty, "round \(round): events for tags \(tags), then \(extra)")
            #expect(context.statistics.completed == reads, "round \(round): \(context.statistics)")
        }
        // The rounds must have cancelled something, or they tested nothing.
        #expect(cancels > 10, "only \(cancels) of 100 cancels found a pending read")
    }
}
