-- wrk script: POST a 2-message OpenAI chat completion, print a machine-readable summary.
wrk.method = "POST"
wrk.body = '{"model": "chat", "messages": [{"role":"system","content":"You are terse."},{"role":"user","content":"Say hi."}]}'
wrk.headers["Content-Type"] = "application/json"
-- bench/run.py sets BENCH_BEARER for systems that need a key (litellm's master key)
local bearer = os.getenv("BENCH_BEARER")
if bearer and bearer ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. bearer
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
