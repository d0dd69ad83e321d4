"""Run a command while llama-cpp-python serves a GGUF model on 127.0.0.1 (OPENAI_BASE_URL points at it).

    python eval/llm/with_llama_server.py -- xmeta bench --config eval/configs/sib200_lowres_costly.yaml

starts ``python -m xmeta.icl.llama_server`` (llama-cpp-python's OpenAI-compatible server with the
fast echo formatter) on the zoo's gemma-3-270m GGUF, waits until it answers, runs the command with
``OPENAI_BASE_URL`` set, and stops the server. Any OpenAI-compatible server works the same way:
set ``OPENAI_BASE_URL`` (and ``OPENAI_API_KEY``) yourself and run the command directly.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from xmeta.icl.llama_server import LocalServer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", help="model file (default: the zoo's gemma-3-270m)")
    ap.add_argument("--alias", default="gemma-3-270m", help="model name clients send")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log", default="llama_server.log")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command to run after --")
    server = LocalServer(
        args.gguf, alias=args.alias, port=args.port, n_ctx=args.n_ctx, n_threads=args.threads, log=args.log
    )
    with server.running():
        print(f"llama server: {server.url} (model {args.alias}, log {args.log})", file=sys.stderr)
        return subprocess.call(command, env={**os.environ, "OPENAI_BASE_URL": server.url})


if __name__ == "__main__":
    sys.exit(main())
