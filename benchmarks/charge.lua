-- wrk script: POST the stock Antaeus charge, as its khttp client sends it, on every request.
--
--   wrk -t1 -c32 -d8s -s benchmarks/charge.lua http://127.0.0.1:PORT -- '<body>' '<host>' '<path>'
--
-- Besides wrk's own summary it prints one line "BENCH_JSON {...}" for benchmarks/wrk.py:
-- requests sent and answered, 2xx and other statuses, answers without a boolean "result"
-- (what would abort an Antaeus pay run), and latency percentiles in microseconds.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   local body = args[1] or '{"currency":{},"customer_id":1,"value":301.99}'
   local host = args[2] or "payment.payment.svc.cluster.local:8000"
   local path = args[3] or "/api/v1/charges"
   req = wrk.format("POST", path, {
      ["Host"] = host,
      ["Content-Type"] = "application/json",
      ["Accept"] = "*/*",
      ["Accept-Encoding"] = "gzip, deflate",
      ["User-Agent"] = "khttp/1.0.0-SNAPSHOT",
   }, body)
   sent, answered, ok, other, no_result = 0, 0, 0, 0, 0
end

function request()
   sent = sent + 1
   return req
end

function response(status, headers, body)
   answered = answered + 1
   if status >= 200 and status < 300 then ok = ok + 1 else other = other + 1 end
   if not (body and (body:find('"result":%s*true') or body:find('"result":%s*false'))) then
      no_result = no_result + 1
   end
end

function done(summary, latency, requests)
   local totals = {sent = 0, answered = 0, ok = 0, other = 0, no_result = 0}
   for _, thread in ipairs(threads) do
      for name, _ in pairs(totals) do
         totals[name] = totals[name] + (thread:get(name) or 0)
      end
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"duration_us":%d,"requests":%d,"sent":%d,"answered":%d,"ok":%d,"other":%d,' ..
      '"no_result":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
      summary.duration, summary.requests, totals.sent, totals.answered, totals.ok, totals.other,
      totals.no_result, e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)))
end
