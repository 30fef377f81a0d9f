// This file owns the engine's reaper (stage 4 of the 2011 proposal): the final copy in the caller's
// context, the re-arm of a read whose pages were evicted since the poller saw them, and the blocking
// safety net.
import CBufferedAIO
import Glibc

extension Engine {
    /// The reaper: finishes a delivered request with the final copy, in the caller's context. Returns
    /// false if the request went back to the poller because its pages were evicted since they were seen.
    func reap(_ request: Request) -> Bool {
        let finished = reapOnce(request)
        if finished { counters.completed.add(1) }
        return finished
    }

    private func reapOnce(_ request: Request) -> Bool {
        switch request.state {
        case .finished, .cancelled: return true
        case .ready: break
        case .pending: preconditionFailure("request \(request.serial): reaped while the poller owns it")
        }
        if let direct = request.direct {
            request.failedCall = "io_getevents"
            request.finish(direct.result)
            return true
        }
        while request.done < request.length {
            let remaining = request.length - request.done
            let position = request.offset + Int64(request.done)
            if request.forceBlocking || !request.nowaitSupported {
                return finishBlocking(request)
            }
            let count = system_preadv2(
                request.fd, request.buffer! + request.done, remaining, position, cbaio_RWF_NOWAIT)
            if count > 0 {
                request.done += count
                continue
            }
            if count == 0 { break }
            switch errno {
            case EAGAIN:
                if request.rearms < configuration.maximumRearms {
                    rearm(request)
                    return false
                }
                return finishBlocking(request)
            case EOPNOTSUPP:
                request.nowaitSupported = false
            default:
                request.failedCall = "preadv2"
                request.finish(request.done > 0 ? request.done : -Int(errno))
                return true
            }
        }
        request.finish(request.done)
        return true
    }

    /// Finishes a request its reaper claimed from the poller with a blocking pread: the caller had nothing
    /// else to do but wait, and a pread sleeps on the page lock and wakes the moment the I/O ends.
    /// Touches only the reaper's fields; the poller drops the request when it sees it is no longer pending.
    func reapBlocking(_ request: Request) {
        counters.reaperWaits.add(1)
        counters.completed.add(1)
        readRemainder(request)
    }

    /// The safety net: a blocking pread of what is left, so the data is always right even if the cache
    /// keeps losing it.
    private func finishBlocking(_ request: Request) -> Bool {
        counters.blockingReads.add(1)
        readRemainder(request)
        return true
    }

    /// Reads the rest of the request with blocking preads and finishes it. The kernel's own short-count
    /// rule applies: bytes read before an error are returned, the error only when nothing was.
    private func readRemainder(_ request: Request) {
        while request.done < request.length {
            let count = system_pread(
                request.fd, request.buffer! + request.done, request.length - request.done,
                request.offset + Int64(request.done))
            if count > 0 {
                request.done += count
            } else if count == 0 {
                break
            } else {
                request.failedCall = "pread"
                request.finish(request.done > 0 ? request.done : -Int(errno))
                return
            }
        }
        request.finish(request.done)
    }

    /// Sends a request whose pages were evicted between completion and reap back to the poller, with its
    /// readahead issued again.
    private func rearm(_ request: Request) {
        request.rearms += 1
        counters.rearms.add(1)
        var info = stat()
        guard system_fstat(request.fd, &info) == 0 else {
            request.forceBlocking = true
            enqueue(request)
            return
        }
        startMissingPages(request, info: info, nowaitStartedFirstPage: Residency.nowaitMissStartsRead)
        if request.references == 0, case .mincore = request.probe {
            // mincore says resident but RWF_NOWAIT just missed: mincore is not telling this caller the
            // truth (an ACL or namespace the inode check cannot see). Trust RWF_NOWAIT from now on.
            request.probe = .nowait
            startMissingPages(request, info: info, nowaitStartedFirstPage: true)
        }
        request.handle(.wasEvicted)
        enqueue(request)
    }
}
