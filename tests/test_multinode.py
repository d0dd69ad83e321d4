"""Past one machine: two `accelerate launch` nodes (gloo over loopback) train as one process does.

Node 0 and node 1 each run one rank (``--num_machines 2 --num_processes 2``: the process count is
the total over the machines), meet at ``--main_process_ip 127.0.0.1``, and must end with the
weights of a one-process run of the same config: the recipe's episode split and gradient sum do
not depend on how ranks are spread over machines.

On CPUs the launch is accelerate's torchrun path (``--multi_gpu``) with ``ACCELERATE_USE_CPU=true``,
which gives a gloo ``MULTI_CPU`` group. Two look-alikes train each node alone as a world of one
(and still match the one-process weights, since every rank then takes all of each step's
episodes): ``--cpu`` (accelerate 1.x then starts the script once per node without torchrun: its
simple launcher, meant for ``mpirun``), and ``--multi_gpu`` without ``ACCELERATE_USE_CPU`` on a
host without GPUs (each torchrun worker's ``Accelerator()`` falls back to a lone CPU process). So
the test also checks that node 1 wrote nothing (only global rank 0 writes), which a lone node 1
would have.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
from test_recipe_meta_train import RECIPE, final_params, overrides, run_recipe, tiny_setup  # noqa: F401 (fixture)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_command(rank: int, port: int, args: list[str]) -> list[str]:
    """The launch line of node ``rank`` of 2, as on a real cluster but with the loopback address."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2",
            "--machine_rank", str(rank), "--num_processes", "2", "--main_process_ip", "127.0.0.1",
            "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
            str(RECIPE), *args]  # fmt: skip


@pytest.mark.slow
def test_two_nodes_equal_one_process(tiny_setup, tmp_path):  # noqa: F811
    data, model = tiny_setup
    one, two, local = tmp_path / "one", tmp_path / "nodes", tmp_path / "node1_local"
    r1 = run_recipe(overrides(data, model, one, meta_batch_size=4))
    assert r1.returncode == 0, r1.stderr[-2000:]
    # Each node gets its own output_dir, as nodes without a shared disk would: only global rank 0
    # writes, so node 1's stays empty -- and would hold a whole run had it trained alone.
    args = [overrides(data, model, out, meta_batch_size=4) for out in (two, local)]
    # GLOO_SOCKET_IFNAME: gloo would otherwise pick the host's first interface, not the loopback.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "GLOO_SOCKET_IFNAME": "lo",
           "ACCELERATE_USE_CPU": "true"}  # fmt: skip
    port = free_port()
    nodes = [subprocess.Popen(node_command(rank, port, args[rank]), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]  # fmt: skip
    try:
        outs = [p.communicate(timeout=600) for p in nodes]
    finally:
        for p in nodes:  # a node left waiting for its peer must not outlive the test
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, (p, (_, err)) in enumerate(zip(nodes, outs)):
        assert p.returncode == 0, f"node {rank}: {err[-3000:]}"
    p1, p2 = final_params(one), final_params(two)
    assert p1.keys() == p2.keys()
    for k in p1:
        torch.testing.assert_close(p1[k], p2[k], rtol=1e-4, atol=1e-5, msg=k)
    assert (two / "final").is_dir()
    assert not (local / "final").exists() and not (local / "checkpoints").exists()
