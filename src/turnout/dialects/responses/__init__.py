"""The OpenAI Responses API (`POST /v1/responses`) as one more ingress dialect.

A Responses request is decoded into the internal chat-shaped Request, so it runs the same
core as chat completions (routes, failover, health, the JSON guard, the ledger with dialect
"responses", the x-turnout-* headers), and every upstream is reached by translation.

Mapping decisions:

- `input`: a string is one user message. Message items (role user, assistant, system or
  developer; content a string or parts) become chat messages: input_text/output_text parts
  become text, input_image an image_url part (a URL or data URL; a `file_id` is refused:
  turnout keeps no files), input_file a chat file part (file_data or file_id). Only user
  messages keep non-text parts; the others are joined into one string.
- `function_call` items join the assistant message before them (or start one) as chat
  tool_calls, their `call_id` the call's id; `function_call_output` items become tool
  messages (text output only).
- `reasoning` items are dropped: no chat upstream takes reasoning back. `item_reference`
  and any other item type (hosted tools' calls and outputs) are a 400 naming the type.
- `instructions` (a string) is a system message first.
- `tools`: function tools become chat tools; any other type (web_search, file_search,
  computer...) is a 400 naming it, since chat upstreams run function tools only.
  `tool_choice` maps to chat's (a named function, allowed_tools); hosted choices are a 400.
- `text.format` json_schema/json_object becomes response_format, so the output guard checks
  the answer; `text.verbosity` is dropped.
- `max_output_tokens` -> max_tokens; temperature, top_p and user map as they are;
  `parallel_tool_calls` goes to the upstream only with tools (chat refuses it without).
- Stateless: `previous_response_id`, `conversation`, stored `prompt` and `background: true`
  are a 400 in OpenAI's shape (code unsupported_parameter) saying to send the whole input.
  `store` is accepted and ignored (the SDK and agents send it); every response says
  `store: false`.
- Deliberately dropped, never passed to a chat upstream (which would refuse them): include,
  truncation, prompt_cache_key/_retention/_options, reasoning, metadata, service_tier,
  top_logprobs, max_tool_calls, safety_identifier, context_management, stream_options, and
  any field turnout does not know.

Output: a reasoning item (the upstream's reasoning text as `reasoning_text` content, with an
empty summary: it is the raw reasoning, not a summary), a `message` with one output_text part
(annotations []), then one `function_call` item per call (id fc_..., call_id the upstream's
call id). A finish reason "length" is status "incomplete" with incomplete_details.reason
"max_output_tokens" (content_filter likewise); a stream then ends with response.incomplete,
as OpenAI's does. Usage is input/output tokens with their details (cached, reasoning) and
turnout's cost. Request parameters are not echoed in the response object.
"""
