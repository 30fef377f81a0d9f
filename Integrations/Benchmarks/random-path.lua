-- wrk script for wrk-compare: each request asks for a random one of WRK_FILES files named f00000.bin ...,
-- and `done` prints one machine-readable RESULT line (latencies in microseconds).
local files = tonumber(os.getenv("WRK_FILES") or "10000")

function setup(thread)
  thread:set("seed", math.random(1, 2147483647))
end

function init(args)
  -- Each thread gets its own sequence (wrk copies the Lua state per thread).
  math.randomseed(os.time() + (seed or 0))
end

function request()
  return wrk.format("GET", string.format("/f%05d.bin", math.random(0, files - 1)))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d bytes=%d errors=%d non2xx=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
