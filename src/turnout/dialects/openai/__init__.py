"""The OpenAI Chat Completions wire format: ingress (what clients send us) and upstream
(what OpenAI-compatible providers accept and return)."""
