"""``xmeta serve``: serve adapted classifiers over HTTP (FastAPI + uvicorn) with dynamic batching."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from pathlib import Path

from xmeta.commands import add_command

logger = logging.getLogger(__name__)

EPILOG = """\
endpoints:
  POST /v1/classify   {"model": NAME, "texts": [...]} -> {"model", "labels", "predictions": [{"label", "scores"}]}
                      (the same numbers as `xmeta predict` on the same texts; "model" may be left out
                      when one model is served)
  POST /v1/adapt      {"name", "lang", "support": [{"text", "label"}], "base": "default"} -> a new model,
                      persisted under --adapt-dir/NAME (off unless --adapt-dir is given)
  GET  /v1/models     names, languages, labels, base model, model card
  GET  /healthz       liveness;  GET /readyz: readiness (503 while starting or draining)
  GET  /metrics       Prometheus: request counts and latency, texts and requests per forward pass, queue
  GET  /docs          OpenAPI documentation;  GET /: a page to try a classifier in the browser

behaviour: requests from many clients are merged into one forward pass (--max-batch texts, waiting
at most --max-wait-ms for more); a full queue answers 503 with Retry-After; too many or too long
texts 413; bad JSON 400; empty or invalid fields 422; unknown model 404; every error is JSON
{"error": {"status", "message"}}. SIGTERM (or Ctrl-C) stops accepting, answers every request in
flight, then exits. Binds to 127.0.0.1; any other address needs a bearer token in
$XMETA_SERVE_TOKEN (clients send `Authorization: Bearer TOKEN`), or --no-auth to accept anyone.

examples:
  xmeta adapt --support my_swahili.tsv --lang swh_Latn --model default --out models/swh
  xmeta serve --model models/swh
  curl -s localhost:8000/v1/classify -H 'Content-Type: application/json' \\
       -d '{"texts": ["Timu ilishinda mechi jana"]}'
  xmeta serve --model swh=models/swh --model yor=models/yor --port 9000 --precision bf16
  XMETA_SERVE_TOKEN=s3cret xmeta serve --model models/swh --host 0.0.0.0
  xmeta serve --model models/swh --adapt-dir models/served    # also accept POST /v1/adapt
"""


DESCRIPTION = "Serve one or more classifiers written by `xmeta adapt --out` behind an HTTP endpoint."


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "serve", "serve adapted classifiers over HTTP (batched, with a page to try them)", DESCRIPTION, EPILOG
    )
    p.add_argument("--model", action="append", default=[], metavar="[NAME=]DIR",
                   help="adapted model directory, optionally named (default name: the directory's name); repeat "
                   "for several")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--max-batch", type=int, default=64, metavar="N",
                   help="texts per forward pass gathered across requests (default: 64)")  # fmt: skip
    p.add_argument("--max-wait-ms", type=float, default=5.0, metavar="MS",
                   help="longest wait for more requests before a forward pass (default: 5)")  # fmt: skip
    p.add_argument("--max-queue", type=int, default=4096, metavar="N",
                   help="texts allowed to wait; beyond it requests get 503 + Retry-After (default: 4096)")  # fmt: skip
    p.add_argument("--max-texts", type=int, default=256, metavar="N", help="texts per request (default: 256)")
    p.add_argument("--max-chars", type=int, default=10_000, metavar="N", help="characters per text (default: 10000)")
    from xmeta.commands.predict import add_inference_options

    add_inference_options(p)  # --batch-size, --precision: as xmeta predict
    p.add_argument("--adapt-dir", metavar="DIR", help="enable POST /v1/adapt; new classifiers are saved here")
    p.add_argument("--no-auth", action="store_true",
                   help="allow binding a non-loopback address without $XMETA_SERVE_TOKEN")  # fmt: skip
    p.add_argument("--graceful-timeout", type=float, default=30.0, metavar="S",
                   help="on SIGTERM, wait at most this long for requests in flight (default: 30)")  # fmt: skip
    p.set_defaults(func=_run)


def parse_models(values: list[str]) -> dict[str, Path]:
    """``[NAME=]DIR`` arguments -> {name: directory}; names must be unique."""
    from xmeta.errors import InputError
    from xmeta.serve.app import NAME_RE

    if not values:
        raise InputError("give at least one --model DIR (a directory written by `xmeta adapt --out`)")
    out: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = Path(value).resolve().name, value
        if not NAME_RE.match(name):
            raise InputError(f"--model {value}: name {name!r} must match {NAME_RE.pattern}")
        if name in out:
            raise InputError(f"--model {value}: the name {name!r} is used twice; name them: --model NAME=DIR")
        out[name] = Path(path)
    return out


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _run(args: argparse.Namespace) -> int:
    from xmeta.errors import InputError

    for flag in ("max_batch", "max_queue", "max_texts", "max_chars", "batch_size"):
        if getattr(args, flag) < 1:
            raise InputError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.max_wait_ms < 0:
        raise InputError(f"--max-wait-ms must be >= 0, got {args.max_wait_ms}")
    token = os.environ.get("XMETA_SERVE_TOKEN") or None
    if not _is_loopback(args.host) and not token and not args.no_auth:
        raise InputError(
            f"--host {args.host} accepts connections from other machines: set XMETA_SERVE_TOKEN to require a "
            "bearer token, or pass --no-auth to serve without one"
        )
    specs = parse_models(args.model)
    try:
        import uvicorn

        from xmeta.serve import load_models, make_adapter
        from xmeta.serve.app import ServeSettings, create_app
    except ImportError as err:
        raise InputError(f"xmeta serve needs the serve extra: pip install 'xmeta[serve]' ({err})") from None

    adapt_dir = Path(args.adapt_dir) if args.adapt_dir else None
    settings = ServeSettings(max_texts=args.max_texts, max_chars=args.max_chars, max_batch=args.max_batch,
                             max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, token=token,
                             adapt_dir=adapt_dir)  # fmt: skip
    models = load_models(specs, batch_size=args.batch_size, precision=args.precision)
    adapter = make_adapter(adapt_dir, batch_size=args.batch_size, precision=args.precision) if adapt_dir else None
    app = create_app(models, settings, adapter=adapter)
    # uvicorn's info log says where it listens ("Uvicorn running on http://...") and when it drains.
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info",
                            timeout_graceful_shutdown=args.graceful_timeout, access_log=bool(args.verbose))  # fmt: skip
    logger.warning("xmeta serve: %s (Ctrl-C or SIGTERM to stop)", ", ".join(models))
    uvicorn.Server(config).run()
    return 0
