"""Load and fault test of `xmeta serve` on localhost with real SIB-200 sentences.

    python eval/serve/load.py --out eval/results/serve            # ~5 min on a 2-core CPU

1. Adapts `meta:default` to a 7-way 5-shot support set (SIB-200 dev of --lang), saves it.
2. Offline reference: the same sentences through `xmeta predict`'s own code path
   (`load_predictor` + `write_predictions`), timed, in this process, with the server idle.
3. Load: starts `xmeta serve` as a subprocess, --clients concurrent clients each send
   --texts-per-request sentences per request until every sentence was sent --rounds times (or
   --max-seconds passed); throughput, p50/p95/p99 latency, errors; every answer is checked against
   the offline labels.
4. Fault run: clients killed mid-request (half-sent bodies, closed before the answer), malformed
   requests at a rate, and a SIGTERM + restart of the server under load; counts of requests sent,
   accepted, answered correctly, rejected (4xx / 503), refused while the server was down.

Writes load.json and load.md under --out.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sentences(data_dir: Path, langs: list[str], n: int) -> list[str]:
    from xmeta.data.sib200 import load_sib200

    out: list[str] = []
    for lang in langs:
        for split in ("test", "dev", "train"):
            out += list(load_sib200(data_dir, [lang], [split])["text"])
    return out[:n]


def start_server(model_dir: Path, port: int, args: argparse.Namespace) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "xmeta.cli", "serve", "--model", f"clf={model_dir}", "--port", str(port),
           "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]  # fmt: skip
    log = open(Path(args.out) / "server.log", "a")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see {log.name}")
        time.sleep(0.2)
    raise SystemExit("server did not become ready in 120 s")


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


async def load_phase(url: str, texts: list[str], ref: list[str], args: argparse.Namespace) -> dict:
    chunks = [list(range(i, min(i + args.texts_per_request, len(texts))))
              for i in range(0, len(texts), args.texts_per_request)] * args.rounds  # fmt: skip
    queue: asyncio.Queue = asyncio.Queue()
    for c in chunks:
        queue.put_nowait(c)
    lat: list[float] = []
    stats = {"requests": 0, "ok": 0, "wrong": 0, "errors": 0, "texts": 0}
    deadline = time.perf_counter() + args.max_seconds

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            while not queue.empty() and time.perf_counter() < deadline:
                idx = queue.get_nowait()
                t0 = time.perf_counter()
                stats["requests"] += 1
                try:
                    r = await c.post("/v1/classify", json={"texts": [texts[i] for i in idx]})
                except httpx.HTTPError:
                    stats["errors"] += 1
                    continue
                lat.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    stats["errors"] += 1
                    continue
                labels = [p["label"] for p in r.json()["predictions"]]
                stats["ok" if labels == [ref[i] for i in idx] else "wrong"] += 1
                stats["texts"] += len(idx)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(args.clients)))
    wall = time.perf_counter() - t0
    return {**stats, "clients": args.clients, "texts_per_request": args.texts_per_request, "seconds": round(wall, 2),
            "texts_per_s": round(stats["texts"] / wall, 1), "p50_ms": round(1000 * percentile(lat, 50), 1),
            "p95_ms": round(1000 * percentile(lat, 95), 1), "p99_ms": round(1000 * percentile(lat, 99), 1)}  # fmt: skip


MALFORMED = [
    (b"{not json", 400),
    (b'{"texts": "one string"}', 422),
    (b'{"texts": []}', 422),
    (b'{"model": "nope", "texts": ["x"]}', 404),
    (b'{"texts": [""]}', 422),
    (json.dumps({"texts": ["x"] * 300}).encode(), 413),
]


async def half_request(port: int, body: bytes, cut: bool) -> None:
    """A client killed mid-request: half a body then close (cut), or the whole request then close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    writer.write(head.encode() + (body[: len(body) // 2] if cut else body))
    await writer.drain()
    await asyncio.sleep(0.01)
    writer.close()


async def fault_phase(port: int, texts: list[str], ref: list[str], restart, args: argparse.Namespace) -> dict:
    url = f"http://127.0.0.1:{port}"
    c = {"sent": 0, "accepted": 0, "answered_correctly": 0, "answered_wrong": 0, "rejected_4xx": 0,
         "rejected_503": 0, "server_errors_5xx": 0, "refused_while_down": 0, "malformed_sent": 0,
         "malformed_rejected_as_expected": 0, "malformed_unexpected_answer": 0,
         "malformed_refused_while_down": 0, "killed_clients": 0}  # fmt: skip
    stop = time.perf_counter() + args.fault_seconds
    rng = random.Random(0)

    async def good_client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as cl:
            while time.perf_counter() < stop:
                start = rng.randrange(0, len(texts) - args.texts_per_request)
                idx = list(range(start, start + args.texts_per_request))
                c["sent"] += 1
                try:
                    r = await cl.post("/v1/classify", json={"texts": [texts[i] for i in idx]})
                except httpx.TransportError:
                    c["refused_while_down"] += 1
                    await asyncio.sleep(0.2)
                    continue
                c["accepted"] += 1
                if r.status_code == 200:
                    ok = [p["label"] for p in r.json()["predictions"]] == [ref[i] for i in idx]
                    c["answered_correctly" if ok else "answered_wrong"] += 1
                elif r.status_code == 503:
                    c["rejected_503"] += 1
                    await asyncio.sleep(float(r.headers.get("Retry-After", 1)))
                elif r.status_code >= 500:
                    c["server_errors_5xx"] += 1
                else:
                    c["rejected_4xx"] += 1

    async def bad_client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as cl:
            while time.perf_counter() < stop:
                await asyncio.sleep(1.0 / args.malformed_rate)
                body, want = rng.choice(MALFORMED)
                c["malformed_sent"] += 1
                try:
                    r = await cl.post("/v1/classify", content=body, headers={"Content-Type": "application/json"})
                except httpx.TransportError:
                    c["malformed_refused_while_down"] += 1
                    continue
                expected = r.status_code == want and "error" in r.json()
                c["malformed_rejected_as_expected" if expected else "malformed_unexpected_answer"] += 1

    async def killer() -> None:
        while time.perf_counter() < stop:
            await asyncio.sleep(0.25)
            body = json.dumps({"texts": texts[:8]}).encode()
            try:
                await half_request(port, body, cut=rng.random() < 0.5)
                c["killed_clients"] += 1
            except OSError:
                pass

    async def restarter() -> None:
        await asyncio.sleep(args.fault_seconds / 3)
        await asyncio.to_thread(restart)

    await asyncio.gather(*(good_client() for _ in range(args.clients)), bad_client(), killer(), restarter())
    c["every_accepted_answered"] = c["accepted"] == (
        c["answered_correctly"] + c["answered_wrong"] + c["rejected_4xx"] + c["rejected_503"] + c["server_errors_5xx"]
    )
    return c


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("XMETA_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--lang", default="swh_Latn", help="language of the support set (SIB-200 dev)")
    p.add_argument("--text-langs", default="swh_Latn,yor_Latn", help="languages of the sentences sent")
    p.add_argument("--n-texts", type=int, default=2000)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--texts-per-request", type=int, default=8)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=300)
    p.add_argument("--max-batch", type=int, default=128)
    p.add_argument("--max-wait-ms", type=float, default=10)
    p.add_argument("--fault-seconds", type=float, default=60)
    p.add_argument("--malformed-rate", type=float, default=5.0, help="malformed requests per second")
    p.add_argument("--out", default=str(ROOT / "eval" / "results" / "serve"))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "server.log").write_text("")

    import torch

    import xmeta
    from xmeta.commands.predict import write_predictions
    from xmeta.data.sib200 import load_sib200

    data_dir = Path(args.data_dir)
    dev = load_sib200(data_dir, [args.lang], ["dev"])
    by_label: dict[str, list[str]] = {}
    for r in dev:
        by_label.setdefault(r["label_name"], []).append(r["text"])
    support = [(t, label) for label, ts in sorted(by_label.items()) for t in ts[:5]]
    work = Path(tempfile.mkdtemp(prefix="xmeta-load-"))
    model_dir = xmeta.adapt(support, "default", lang=args.lang).save(work / "clf")
    texts = sentences(data_dir, args.text_langs.split(","), args.n_texts)

    # Offline reference: `xmeta predict`'s code path, server not running yet.
    predictor = xmeta.load_predictor(model_dir)
    write_predictions(predictor, texts[:64], io.StringIO(), 64)  # warm-up
    buf = io.StringIO()
    t0 = time.perf_counter()
    write_predictions(predictor, texts, buf, 64)
    offline_s = time.perf_counter() - t0
    ref = [json.loads(line)["label"] for line in buf.getvalue().splitlines()]
    del predictor

    port = free_port()
    proc = start_server(model_dir, port, args)
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(load_phase(url, texts[:256], ref[:256], argparse.Namespace(**{**vars(args), "rounds": 1})))  # warm
        load = asyncio.run(load_phase(url, texts, ref, args))
        metrics = httpx.get(f"{url}/metrics").text
        holder = {"proc": proc}

        def restart() -> None:
            holder["proc"].send_signal(signal.SIGTERM)
            holder["restart_exit"] = holder["proc"].wait(60)
            holder["proc"] = start_server(model_dir, port, args)

        faults = asyncio.run(fault_phase(port, texts, ref, restart, args))
        faults["restart_exit_status"] = holder["restart_exit"]
        proc = holder["proc"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    offline_tps = len(texts) / offline_s
    report = {
        "command": "python " + " ".join([str(Path(sys.argv[0]).relative_to(ROOT)) if Path(sys.argv[0]).is_absolute() else sys.argv[0], *sys.argv[1:]]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("data_dir", "out")},
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "loadavg_before": os.getloadavg()},
        "n_texts": len(texts),
        "offline_xmeta_predict": {"seconds": round(offline_s, 2), "texts_per_s": round(offline_tps, 1)},
        "load": load,
        "throughput_ratio_vs_xmeta_predict": round(load["texts_per_s"] / offline_tps, 3),
        "batch_metrics": [line for line in metrics.splitlines() if line.startswith(("xmeta_batch_texts_sum", "xmeta_batch_texts_count", "xmeta_batch_requests_sum", "xmeta_batch_requests_count"))],
        "faults": faults,
    }  # fmt: skip
    (out / "load.json").write_text(json.dumps(report, indent=2) + "\n")
    md = [
        "# xmeta serve: load and fault test",
        "",
        f"`{report['command']}` on {os.cpu_count()} CPU cores (load average before: "
        f"{', '.join(f'{x:.2f}' for x in report['machine']['loadavg_before'])}), {len(texts)} real SIB-200 sentences "
        f"({args.text_langs}), a 7-way 5-shot classifier adapted from `meta:default` on {args.lang} dev.",
        "",
        "| | value |",
        "|---|---:|",
        f"| offline `xmeta predict` (same sentences, same process code path) | {offline_tps:.1f} texts/s |",
        f"| server, {args.clients} concurrent clients × {args.texts_per_request} texts/request | {load['texts_per_s']} texts/s |",
        f"| throughput ratio vs `xmeta predict` | {report['throughput_ratio_vs_xmeta_predict']} |",
        f"| latency p50 / p95 / p99 | {load['p50_ms']} / {load['p95_ms']} / {load['p99_ms']} ms |",
        f"| requests / errors / wrong answers | {load['requests']} / {load['errors']} / {load['wrong']} |",
        "",
        f"Fault run ({args.fault_seconds:.0f} s, {args.clients} clients, malformed requests at {args.malformed_rate}/s, "
        "clients killed mid-request every 0.25 s, SIGTERM + restart of the server at 1/3 of the run):",
        "",
        "| count | value |",
        "|---|---:|",
        *(f"| {k} | {v} |" for k, v in faults.items()),
        "",
    ]  # fmt: skip
    (out / "load.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
