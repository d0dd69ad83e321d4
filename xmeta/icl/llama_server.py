"""llama-cpp-python's OpenAI-compatible server, usable for label log-likelihoods of long prompts.

``python -m xmeta.icl.llama_server --model FILE.gguf --logits_all true [llama_cpp.server options]``
starts exactly ``python -m llama_cpp.server`` (same options, same engine, same HTTP API), with one
change: the echoed prompt log-probabilities of ``/v1/completions`` (``echo`` + ``logprobs``) are
formatted by a vectorised routine instead of llama-cpp-python 0.3's per-token pure-Python code.

Why: for every prompt token, llama-cpp-python 0.3.36 sorts ``zip(logprobs_row, range(vocab))`` in
Python (gemma-3's vocabulary has 262,144 entries) and re-detokenizes the whole prompt prefix, so
one 7-way 5-shot prompt (~1,900 tokens) takes many minutes to *format* after milliseconds of
compute. Here the same values are computed with numpy, and everything about a prompt prefix that
an earlier request already had (token strings, offsets, log-probabilities, top alternatives) is
reused: consecutive requests of an episode share the demonstrations, exactly like llama.cpp's own
KV-cache prefix reuse. The output equals the original's field for field (tested on short prompts,
where the original is fast enough to compare with).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

_PATCHED = "_xmeta_fast_echo"


def _top_alternatives(row: np.ndarray, k: int) -> list[tuple[float, int]]:
    """The ``k`` best ``(logprob, token id)`` pairs as ``sorted(zip(row, range(n)), reverse=True)[:k]`` orders them."""
    if k <= 0:
        return []
    k = min(k, row.size)
    cut = np.partition(row, row.size - k)[row.size - k]  # k-th largest value
    cand = np.flatnonzero(row >= cut)  # every tie of the cut value is a candidate
    order = np.lexsort((-cand, -row[cand]))  # value descending, then token id descending (reverse tuple sort)
    return [(row[cand[i]], int(cand[i])) for i in order[:k]]


class _EchoMemo:
    """Per-position echo results of the previous request, reusable while its tokens are a prefix."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.raw: np.ndarray = np.zeros(0, np.float32)  # logit of each row's own token, to detect recomputed rows
        self.k = -1
        self.rows: list[tuple[str, int, Any, dict[str, Any]]] = []  # (token str, text offset, logprob, top)


def _piece(llama: Any, token: int) -> str:
    """``detokenize([token])`` as text, memoised per token id (the original's ``prev_tokens`` is unused)."""
    memo = llama.__dict__.setdefault("_xmeta_pieces", {})
    text = memo.get(token)
    if text is None:
        text = memo[token] = llama.detokenize([token]).decode("utf-8", errors="ignore")
    return text


def _text_offsets(llama: Any, tokens: list[int], start: int) -> list[int]:
    """``len(detokenize(tokens[:i]).decode("utf-8", errors="ignore"))`` for ``i >= start``, in linear time.

    ``detokenize`` concatenates the tokens' byte pieces (dropping a leading space only after a
    leading BOS, which echoed tokens never have), so a prefix's text is a byte prefix of the whole
    text; lenient decoding of a valid UTF-8 byte prefix keeps exactly the characters it contains
    whole. Anything else (invalid UTF-8, a leading BOS) takes the original's quadratic route.
    """
    memo = llama.__dict__.setdefault("_xmeta_piece_bytes", {})  # token id -> bytes, shared by every request
    pieces = [memo[t] if t in memo else memo.setdefault(t, llama.detokenize([t])) for t in tokens]
    whole = b"".join(pieces)
    try:
        whole.decode("utf-8")
        plain = not tokens or tokens[0] != llama.token_bos()
    except UnicodeDecodeError:
        plain = False
    if not plain:
        return [len(llama.detokenize(tokens[:i]).decode("utf-8", errors="ignore")) for i in range(start, len(tokens))]
    cum = np.cumsum([0] + [len(p) for p in pieces])[start : len(tokens)]
    data = np.frombuffer(whole, dtype=np.uint8)
    char_ends = np.append(np.flatnonzero((data & 0xC0) != 0x80)[1:], len(data))  # byte end of each character
    return np.searchsorted(char_ends, cum, side="right").tolist()


def _echo_logprobs(llama: Any, all_tokens: list[int], n_rows: int, k: int) -> dict[str, Any]:
    """The ``logprobs`` object the original returns for ``echo`` (prompt without BOS + completion tokens)."""
    from llama_cpp import Llama

    memo: _EchoMemo = getattr(llama, "_xmeta_echo_memo", None) or _EchoMemo()
    same = 0
    if memo.k == k:
        limit = min(len(memo.tokens), len(all_tokens))
        while same < limit and memo.tokens[same] == all_tokens[same]:
            same += 1
    # Row i holds the logits after BOS + all_tokens[:i], so it is unchanged while those tokens are,
    # unless llama.cpp evaluated them again meanwhile (other batch splits round differently): a row
    # whose own token's logit changed is recomputed, with every row after it.
    same = min(same, len(memo.rows), n_rows)
    if same:
        now = llama.scores[np.arange(same), np.asarray(all_tokens[:same])]
        changed = np.flatnonzero(now != memo.raw[:same])
        same = int(changed[0]) if changed.size else same
    rows = memo.rows[:same]
    start = len(rows)
    block = Llama.logits_to_logprobs(llama.scores[start:n_rows]) if start < n_rows else None
    offsets = _text_offsets(llama, all_tokens, start)
    for idx in range(start, min(len(all_tokens), n_rows)):  # the original zips tokens with rows: it stops there
        token = all_tokens[idx]
        row = block[idx - start]
        top = {_piece(llama, i): lp for lp, i in _top_alternatives(row, k)}
        token_str = _piece(llama, token)
        top.update({token_str: row[int(token)]})
        rows.append((token_str, offsets[idx - start], row[int(token)], top))
    n = min(len(rows), n_rows)
    memo.tokens, memo.k, memo.rows = list(all_tokens), k, rows
    memo.raw = np.asarray(llama.scores[np.arange(n), np.asarray(all_tokens[:n], dtype=np.int64)], dtype=np.float32)
    llama._xmeta_echo_memo = memo
    bos = llama.token_bos()
    kept = [r for t, r in zip(all_tokens, rows) if t != bos]  # the original skips BOS tokens
    tokens = [r[0] for r in kept]
    offsets = [r[1] for r in kept]
    values: list[Any] = [r[2] for r in kept]
    tops: list[Any] = [dict(r[3]) for r in kept]
    if all_tokens:  # OpenAI's convention, kept by the original: no log-probability for the first token
        values[0], tops[0] = None, None
    return {"tokens": tokens, "text_offset": offsets, "token_logprobs": values, "top_logprobs": tops}


def _cpu_has_amx() -> bool:
    try:
        return "amx_int8" in Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False


def avoid_amx_repacking() -> None:
    """On CPUs with AMX, load GGUF weights without llama.cpp's extra buffer types (idempotent).

    llama.cpp repacks quantised weights into an AMX buffer on Sapphire/Granite Rapids CPUs, and its
    AMX matmul segfaults on the first decode on some (virtualised) machines: seen here with
    gemma-3-270m Q4_K_M (ggml-org/llama.cpp#20824). Plain CPU buffers compute the same values.
    ``XMETA_LLAMA_EXTRA_BUFTS=1`` keeps llama.cpp's default.
    """
    import llama_cpp.llama_cpp as lib  # the module llama_cpp.Llama takes its default parameters from

    original = lib.llama_model_default_params
    if getattr(original, _PATCHED, None) is not None or os.environ.get("XMETA_LLAMA_EXTRA_BUFTS") == "1":
        return
    if not _cpu_has_amx():
        return

    def model_params() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    setattr(model_params, _PATCHED, original)
    lib.llama_model_default_params = model_params


def install() -> None:
    """Route non-streamed ``echo`` + ``logprobs`` completions through :func:`_echo_logprobs` (idempotent)
    and, on AMX CPUs, avoid llama.cpp's crashing AMX weight buffers (:func:`avoid_amx_repacking`)."""
    from llama_cpp import Llama

    avoid_amx_repacking()

    original = Llama.create_completion
    if getattr(original, _PATCHED, None) is not None:
        return

    def create_completion(self: Any, prompt: Any, *args: Any, **kwargs: Any) -> Any:
        k = kwargs.get("logprobs")
        fast = (
            not args and kwargs.get("echo") and k is not None and not kwargs.get("stream") and isinstance(prompt, str)
        )
        fast = fast and kwargs.get("suffix") is None and self._logits_all
        if not fast:
            return original(self, prompt, *args, **kwargs)
        out = original(self, prompt, **{**kwargs, "logprobs": None})
        n_prompt = int(out["usage"]["prompt_tokens"])
        prompt_tokens = [int(t) for t in self._input_ids[:n_prompt]]
        if len(prompt_tokens) != n_prompt or self.n_tokens < n_prompt:
            return original(self, prompt, *args, **kwargs)  # state not as expected: let the original do it
        completion = out["choices"][0]["text"][len(prompt) :]
        completion_tokens = self.tokenize(completion.encode("utf-8"), add_bos=False, special=True) if completion else []
        bos = self.token_bos()
        all_tokens = prompt_tokens[1 if prompt_tokens and prompt_tokens[0] == bos else 0 :] + completion_tokens
        out["choices"][0]["logprobs"] = _echo_logprobs(self, all_tokens, self.n_tokens, int(k))
        return out

    setattr(create_completion, _PATCHED, original)
    Llama.create_completion = create_completion


def uninstall() -> None:
    """Restore llama-cpp-python's own ``create_completion`` (tests compare the two)."""
    from llama_cpp import Llama

    original = getattr(Llama.create_completion, _PATCHED, None)
    if original is not None:
        Llama.create_completion = original


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """This module's server as a child process on ``127.0.0.1`` (what the tests and ``eval/llm`` start).

    Args:
        gguf: Model file (default: the zoo's gemma-3-270m, assembled once).
        alias: The model name clients send.
        port: TCP port (default: a free one).
        n_ctx: Context size; a 7-way 5-shot SIB-200 prompt needs ~2,000 tokens.
        n_threads: llama.cpp threads.
        log: File that receives the server's output (default: discarded).
    """

    def __init__(
        self,
        gguf: str | Path | None = None,
        *,
        alias: str = "gemma-3-270m",
        port: int | None = None,
        n_ctx: int = 4096,
        n_threads: int = 2,
        log: str | Path | None = None,
    ) -> None:
        if gguf is None:
            from xmeta.models.gguf_convert import cached_gguf

            gguf = cached_gguf()
        self.gguf, self.alias, self.n_ctx, self.n_threads = Path(gguf), alias, n_ctx, n_threads
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = Path(log) if log else None
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180.0) -> LocalServer:
        """Start (or restart) the server and wait until ``/v1/models`` answers.

        Raises:
            RuntimeError: The server exited or did not answer within ``timeout_s``.
        """
        import httpx

        cmd = [sys.executable, "-m", "xmeta.icl.llama_server", "--model", str(self.gguf), "--model_alias", self.alias,
               "--logits_all", "true", "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
               "--host", "127.0.0.1", "--port", str(self.port)]  # fmt: skip
        out = self.log.open("ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama server exited with status {self.proc.returncode} (log: {self.log})")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"llama server did not answer on {self.url} within {timeout_s:.0f} s (log: {self.log})")

    def stop(self, kill: bool = False) -> None:
        """Terminate (or ``kill``) the server and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(60)

    @contextlib.contextmanager
    def running(self) -> Iterator[LocalServer]:
        """``with LocalServer().running() as srv: ... srv.url ...``"""
        self.start()
        try:
            yield self
        finally:
            self.stop()


def main() -> None:
    """``python -m llama_cpp.server`` with :func:`install` applied (all its options are accepted)."""
    install()
    from llama_cpp.server.__main__ import main as serve

    sys.argv[0] = "xmeta.icl.llama_server"
    serve()


if __name__ == "__main__":
    main()
