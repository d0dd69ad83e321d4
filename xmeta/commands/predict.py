"""``xmeta predict``: classify texts with a model saved by ``xmeta adapt``; JSON lines out.

The input is streamed in chunks (constant memory whatever its size). With ``--output``, lines go
to ``<output>.partial`` and a sidecar ``<output>.partial.json`` records, after each chunk is on
disk, what produced them (model, input file, options) and how many texts and bytes are done. An
interrupted run (Ctrl-C, a kill, a crash) leaves both; the same command then continues from the
recorded point, and ``<output>`` itself appears only, by rename, once every text is done.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from xmeta.commands import add_command

if TYPE_CHECKING:
    from xmeta.adaptation.predictor import AdaptedPredictor

logger = logging.getLogger(__name__)

EPILOG = """\
input: a TSV/CSV/JSONL file with a header (the --text-column is read), or plain text with one text
per line (.txt, any other or no suffix, or - for stdin). Blank lines and empty texts are skipped
(count logged), so there is one output line per non-empty input text, in input order. The input is
read as a stream: files larger than memory are fine.

output: one JSON object per line: {"text": ..., "label": ..., "scores": {label: probability, ...}}
(probabilities rounded to 6 decimals; labels in the order of the model's label names)

interruption: with --output, finished lines go to OUTPUT.partial (plus OUTPUT.partial.json, what
produced them); OUTPUT appears only when every text is done. Rerunning the same command after an
interruption continues where it stopped (same model, input file and options); --no-resume starts over.

examples:
  xmeta predict --model models/swh --input sentences.txt > predictions.jsonl
  xmeta predict --model models/swh --input test.tsv --text-column sentence --output preds.jsonl
  xmeta predict --model models/swh --input big.txt --precision auto --output preds.jsonl
"""

DESCRIPTION = "Label each input text with an adapted model and print JSON lines with class probabilities."
PARTIAL_FORMAT = "xmeta-predict-partial/1"
# The default of --precision: bf16 where the CPU (or GPU) has bf16 units, else fp32. On the standard
# benchmark (25 languages, K = 1/5/10, 52,500 queries) bf16 inference through the prediction layers
# (xmeta.models.inference: bf16 GEMMs, float32 residual stream) moved the shipped model's mean
# accuracy by -0.01 / +0.01 / +0.01 points (95% intervals within +-0.09) and changed 0.6% of the
# predictions: eval/results/bf16_check/comparison.md.
DEFAULT_PRECISION = "auto"
CHUNK_BATCHES = 16  # texts per chunk = batch size x this: each chunk is length-sorted, then written


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "predict", "classify texts with a model saved by `xmeta adapt` (JSON lines out)", DESCRIPTION, EPILOG
    )
    p.add_argument("--model", required=True, metavar="DIR", help="directory written by `xmeta adapt --out`")
    p.add_argument("--input", required=True, metavar="FILE", help="texts: TSV/CSV/JSONL with a header, or plain text")
    p.add_argument("--output", metavar="FILE", help="write JSON lines here instead of stdout (resumable)")
    p.add_argument("--text-column", default="text", help="header name of the text column (default: text)")
    p.add_argument(
        "--input-format",
        choices=["auto", "txt", "tsv", "csv", "jsonl"],
        default="auto",
        help="override the format guessed from the suffix (default: auto)",
    )
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="start over even if OUTPUT.partial from an interrupted run of the same command exists",
    )
    add_inference_options(p)
    p.set_defaults(func=_run)


def _precision_arg(value: str) -> str:
    # "auto" is resolved here, once, for the CPU the command runs on: every command sharing these
    # options (predict, serve) then hands a concrete precision to the library.
    if value != "auto":
        return value
    from xmeta.adaptation.predictor import resolve_precision

    return resolve_precision("auto")


def add_inference_options(p: argparse.ArgumentParser) -> None:
    """``--batch-size`` and ``--precision``, shared by ``xmeta predict`` and ``xmeta serve``."""
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="texts per forward pass (default: 64)")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "auto"],
        type=_precision_arg,
        default=DEFAULT_PRECISION,
        help="auto (default): bf16 where this CPU (AVX512-BF16, AMX) or GPU has bf16 units, else fp32; "
        "fp32 (exact); bf16 autocast (about 2x faster there). On the standard benchmark's 52,500 queries "
        "bf16 changed 0.6%% of the predictions and the mean accuracy by at most 0.06 points",
    )


def _run(args: argparse.Namespace) -> int:
    from xmeta.errors import InputError, writing

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    from xmeta.adaptation.texts import STDIN, iter_texts

    texts = iter_texts(args.input, text_column=args.text_column, fmt=args.input_format)
    if not args.output:
        # Input first: a typo in --input (or its column) must not cost a model load.
        texts = _primed(texts)
        predictor = _load(args)
        try:
            with writing("standard output"):  # `> /dev/full`, or a redirect onto a full disk
                write_predictions(predictor, texts, sys.stdout, args.batch_size)
        except BrokenPipeError:
            # `xmeta predict ... | head`: the reader has gone; stop quietly like other Unix tools
            # (and point stdout at devnull so the interpreter's final flush does not fail again).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    out = Path(args.output)
    if out.exists() and not out.is_file():  # /dev/stdout, a FIFO, /dev/full: written as is
        texts = _primed(texts)
        predictor = _load(args)
        with writing(out), open(out, "w", encoding="utf-8") as f:
            write_predictions(predictor, texts, f, args.batch_size)
        return 0
    # stdin, a pipe or a FIFO cannot be read again from the start: such runs are not resumable.
    identity = _identity(args) if str(args.input) != STDIN and Path(args.input).is_file() else None
    with writing(out):  # errors name OUTPUT, the file the user asked for
        run = PartialOutput(out, identity, resume=not args.no_resume)
        try:
            texts = _primed(islice(texts, run.done, None))
            predictor = _load(args)
            with run.open() as f:
                write_predictions(predictor, texts, f, args.batch_size, on_chunk=run.commit, done=run.done)
            run.finish()
        except KeyboardInterrupt:
            if not run.resumable:
                run.discard()
                raise
            logger.warning("interrupted after %d text(s), kept in %s: rerun the same command to continue, or add "
                           "--no-resume to start over", run.done, run.partial)  # fmt: skip
            raise
        except BaseException:
            run.discard()  # a failed run leaves nothing that could pass for (part of) a result
            raise
    return 0


def _primed(texts: Iterable[str]) -> Iterable[str]:
    """``texts`` with its first item already read, so that input errors surface now."""
    it = iter(texts)
    first = next(it, None)
    return it if first is None else chain([first], it)


def _load(args: argparse.Namespace) -> AdaptedPredictor:
    from xmeta.adaptation import load_predictor

    predictor = load_predictor(args.model, batch_size=args.batch_size, precision=args.precision)
    logger.info("predicting with %s at %s precision", args.model, predictor.precision)
    return predictor


def _identity(args: argparse.Namespace) -> dict[str, Any]:
    """What must be unchanged for a partial output to be continued: model, input file, options."""
    from xmeta.artifacts import MANIFEST

    manifest = Path(args.model) / MANIFEST
    # The manifest records every artifact file's digest: its own digest identifies the model.
    model = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None
    src = Path(args.input).resolve()
    st = src.stat()
    return {"model": model, "input": str(src), "input_bytes": st.st_size, "input_mtime_ns": st.st_mtime_ns,
            "text_column": args.text_column, "input_format": args.input_format, "precision": args.precision}  # fmt: skip


class PartialOutput:
    """``<output>.partial`` plus its sidecar: an output file that can be continued after an interruption.

    Args:
        output: the final file; it is created (by rename) only by ``finish``.
        identity: what produced the lines (``None``: not resumable, e.g. stdin input).
        resume: continue a matching partial output if one exists (else start over).

    Attributes:
        done: texts already written (and on disk) when the run starts or after each ``commit``.
    """

    def __init__(self, output: Path, identity: dict[str, Any] | None, *, resume: bool = True) -> None:
        self.output = output
        self.partial = output.with_name(output.name + ".partial")
        self.sidecar = output.with_name(output.name + ".partial.json")
        self.identity = identity
        self.done = 0
        self._bytes = 0
        self._file: BinaryIO | None = None
        state = self._read_state() if resume and identity is not None else None
        if state is not None:
            self.done, self._bytes = int(state["texts_done"]), int(state["bytes_done"])
            logger.warning("%s: continuing an interrupted run: %d text(s) already done", self.partial, self.done)

    @property
    def resumable(self) -> bool:
        return self.identity is not None

    def _read_state(self) -> dict[str, Any] | None:
        if not (self.partial.is_file() and self.sidecar.is_file()):
            return None
        try:
            state = json.loads(self.sidecar.read_text(encoding="utf-8"))
            ok = state.get("format") == PARTIAL_FORMAT and state.get("identity") == self.identity
            ok = ok and self.partial.stat().st_size >= int(state["bytes_done"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            logger.warning("%s: from another model, input or options; starting over", self.partial)
            return None
        return state

    def open(self) -> TextIO:
        """The text stream to write lines to, positioned after the lines already done."""
        self.output.parent.mkdir(parents=True, exist_ok=True)
        if self.done:
            self._file = open(self.partial, "r+b")  # noqa: SIM115 - closed by finish/discard
            # Lines written after the last commit (a chunk cut short) are dropped.
            self._file.truncate(self._bytes)
            self._file.seek(self._bytes)
        else:
            self.sidecar.unlink(missing_ok=True)
            self._file = open(self.partial, "wb")  # noqa: SIM115
            self.commit(0)
        return _NoClose(self._file)

    def commit(self, done: int) -> None:
        """Record that ``done`` texts are written: data to disk first, then the sidecar (atomically)."""
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done, self._bytes = done, self._file.tell()
        if self.identity is None:
            return
        state = {"format": PARTIAL_FORMAT, "identity": self.identity, "texts_done": done, "bytes_done": self._bytes}
        tmp = self.sidecar.with_name(self.sidecar.name + ".tmp")
        tmp.write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.sidecar)

    def finish(self) -> None:
        """All texts done: the partial file becomes ``output`` (one rename), the sidecar goes."""
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial, self.output)
        self.sidecar.unlink(missing_ok=True)

    def discard(self) -> None:
        """Remove the partial file and the sidecar (a failed run that cannot be continued)."""
        if self._file is not None and not self._file.closed:
            # Closing flushes the buffer, which fails again after a write error (full disk, EFBIG).
            with contextlib.suppress(OSError):
                self._file.close()
        for p in (self.partial, self.sidecar, self.sidecar.with_name(self.sidecar.name + ".tmp")):
            p.unlink(missing_ok=True)


class _NoClose:
    """A UTF-8 text view of a binary file that ``PartialOutput`` closes itself (a context manager)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw

    def write(self, s: str) -> int:
        return self._raw.write(s.encode("utf-8"))

    def flush(self) -> None:
        self._raw.flush()

    def __enter__(self) -> _NoClose:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def write_predictions(
    predictor: AdaptedPredictor,
    texts: Iterable[str],
    out: TextIO,
    batch_size: int,
    *,
    on_chunk: Callable[[int], None] | None = None,
    done: int = 0,
) -> None:
    """Predict ``texts`` chunk by chunk and stream one JSON line per text to ``out`` (tqdm on stderr).

    Memory holds one chunk (``batch_size * CHUNK_BATCHES`` texts) whatever the input size.

    Args:
        predictor: the adapted model.
        texts: any iterable, e.g. the stream of ``xmeta.adaptation.texts.iter_texts``.
        out: where the lines go.
        batch_size: texts per forward pass (the chunk size is a multiple of it).
        on_chunk: called with the number of texts written so far (``done`` included) after each chunk.
        done: texts written before this call (a resumed run), for the progress bar and ``on_chunk``.
    """
    from tqdm.auto import tqdm

    from xmeta.adaptation.texts import chunked

    # Chunks of several batches: the predictor sorts each chunk by length, and output streams out
    # chunk by chunk instead of after the whole file.
    chunks = chunked(texts, batch_size * CHUNK_BATCHES)
    with tqdm(unit="text", file=sys.stderr, desc="predict", initial=done, disable=None) as bar:
        for part in chunks:
            pred = predictor.predict(part)
            out.write("".join(json.dumps({"text": t, **r}, ensure_ascii=False) + "\n"
                              for t, r in zip(part, pred.records())))  # fmt: skip
            out.flush()
            done += len(part)
            if on_chunk is not None:
                on_chunk(done)
            bar.update(len(part))
