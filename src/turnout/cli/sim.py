"""`turnout sim`: a simulated OpenAI-compatible upstream with programmable faults.

Imports nothing heavy at the top: the parser reads DESCRIPTION and CONFIG_HELP for every
`turnout` command, and only `turnout sim` itself needs the server."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Serve simulated models on OpenAI's POST /v1/chat/completions and GET /v1/models and
Anthropic's POST /v1/messages, with seeded, programmable latency and faults, for tests and
demos. Without --config: `steady` (well-behaved) and `flaky` (fails 30% of the time)."""

# keep in step with sim/schema.py: tests/test_sim_agent.py checks that every field is named
# here and that the example loads
CONFIG_HELP = """\
config file (YAML):
  seed: 7                    # all randomness is seeded: same seed, same faults (default 0)
  models:                    # model name -> how it behaves; every field is optional
    steady:
      reply: "Hello."        # its text answer (default "Hello from the simulator.")
      ttft: 50ms             # mean time to the first token (a number of seconds or 50ms, 2s)
      ttft_jitter: 0.2       # +/- fraction of ttft, uniform
      tokens_per_second: 200 # pacing of the rest of the answer
    tailed:
      ttft: 800ms
      ttft_distribution: lognormal  # uniform (default; ttft_jitter applies) or lognormal,
      ttft_sigma: 0.5        # ...with ttft its median and this its shape
      slow_rate: 0.05        # this share of requests wait...
      slow_factor: 10        # ...this many times longer for their first token
    flaky:
      error_rate: {500: 0.2, 529: 0.05}  # status -> probability per request
      rate_limit_rate: 0.1   # probability of a 429
      retry_after: 2         # seconds, sent as retry-after with 429s
      ratelimit_remaining: 5 # x-ratelimit-remaining-requests (anthropic-ratelimit-*) to report
      ratelimit_reset: 1s    # x-ratelimit-reset-requests to report with it
      ratelimit_limit: 10    # enforced: this many requests per ratelimit_reset window, then 429s
      hang_rate: 0.01        # never answer
      disconnect_rate: 0.05  # drop the stream (or the connection) mid-way
      disconnect_after: 3    # chunks sent before a disconnect
      stream_error_after: 10 # streams: an in-band error event after this many chunks
      stall_after: 20        # streams: after this many chunks, pause...
      stall_for: 15s         # ...this long, then go on (a stalled upstream)
      malformed_rate: 0.1    # JSON mode: answer with broken JSON (the object cut in half)
      json_fields_limit: 3   # JSON mode: past this many fields, leave the rest out
      json_error_status: 500 # JSON mode: fail every such request with this status
      outages:               # windows of time since start when every request fails
        - {start: 10s, end: 20s, status: 503}  # message: the error's text (optional)
  Faults are drawn once per request, at most one each time, with these probabilities.

how it answers (when no fault is drawn):
  text                  `reply`, paced at tokens_per_second; cut at max_tokens
                        (finish_reason length)
  tools                 a call to the first tool (or the one tool_choice names) with
                        arguments valid against its parameters schema
  after tool results    when the last message is a tool result (OpenAI role tool,
                        Anthropic tool_result blocks): a text answer quoting the result, so
                        an agent loop ends; a tool_choice that forces a call still gets one
  JSON mode             response_format json_schema (Anthropic: output_config.format or a
                        forced tool): a minimal instance valid against the schema;
                        json_object (Anthropic: a system prompt asking for a JSON object):
                        the JSON example in the prompt, or the keys it names ("keys: a, b"),
                        else {"reply": reply}
  control routes        GET /sim/models, POST /sim/models/NAME (set a behaviour live),
                        DELETE /sim/models/NAME, POST /sim/reset {"seed": n}, GET /sim/stats
"""


def sim(args: argparse.Namespace) -> int:
    from turnout.config import ConfigError
    from turnout.sim import load_sim_file, run_sim
    from turnout.sim.schema import SimBehaviour

    # with no file: one well-behaved model and one that fails a third of the time
    behaviours = {
        "steady": SimBehaviour(ttft=0.05, reply="Hello from the steady simulated model."),
        "flaky": SimBehaviour(ttft=0.05, error_rate={500: 0.2, 429: 0.1}, retry_after=2),
    }
    seed = 0
    if args.config:
        try:
            behaviours, seed = load_sim_file(args.config)
        except ConfigError as exc:
            print(f"turnout sim: config error\n{exc}", file=sys.stderr)
            return 2
    try:
        run_sim(args.host, args.port, behaviours, seed)
    except OSError as exc:
        print(f"turnout sim: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
