"""Writes the machine refuses (full disk, no permission, read-only) and benchmarks with failed cells.

Every refused write is a real one: ``/dev/full`` (ENOSPC on any Linux), a file-size limit set with
``RLIMIT_FSIZE`` in a child process (EFBIG on any Linux, for writers that need a directory), a
64 KiB tmpfs filled to the last byte, and a read-only directory (``chmod 0o555``, or a read-only
tmpfs under root, which ignores permission bits). The mounts need root and a container that allows
them; those tests are skipped elsewhere, the ``/dev/full`` and ``RLIMIT_FSIZE`` ones run anywhere.
The CLI must answer with one line naming the path, exit code 2, and leave no partial or temporary
file behind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from adapt_fixtures import write_corpus, write_encoder, write_meta_checkpoint
from const_learner import ConstLearner

from xmeta.bench import register_method
from xmeta.cli import main
from xmeta.errors import WriteError, writing

ROOT = Path(__file__).resolve().parents[1]
DEV_FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not DEV_FULL.exists(), reason="no /dev/full (not Linux)")


def _mount_tmpfs(where: Path, options: str) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"this container refuses to mount a tmpfs: {done.stderr.strip()}")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A directory on its own 64 KiB tmpfs (fill it with :func:`fill`)."""
    root = tmp_path / "small"
    root.mkdir()
    _mount_tmpfs(root, "size=64k")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def fill(root: Path) -> Path:
    """Take every free byte of ``root``'s file system with a ``filler`` file."""
    with open(root / "filler", "wb", buffering=0) as f:  # unbuffered: close has nothing left to flush
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC
    return root


@pytest.fixture
def full_dir(small_fs: Path) -> Path:
    """A directory on a tmpfs with no byte left."""
    return fill(small_fs)


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody may write into: mode 0o555, or (root ignores modes) a read-only tmpfs."""
    root = tmp_path / "ro"
    root.mkdir()
    if os.geteuid() != 0:
        root.chmod(0o555)
        try:
            yield root
        finally:
            root.chmod(0o755)
        return
    _mount_tmpfs(root, "ro,size=64k")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def leftovers(directory: Path) -> list[str]:
    """Files of a directory except the fixtures' own: temporary files and partial outputs."""
    return sorted(p.name for p in directory.iterdir() if p.name != "filler")


def last_line(stderr: str) -> str:
    """The verdict: the last line of stderr (progress bars and log lines may come before it)."""
    return stderr.strip().splitlines()[-1]


def run_with_file_size_limit(argv: Sequence[str], limit: int) -> subprocess.CompletedProcess[str]:
    """``xmeta ARGV`` in a child whose files may not grow beyond ``limit`` bytes (writes past it: EFBIG)."""
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        "from xmeta.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=300)


# ---------------------------------------------------------------- the helper


@needs_dev_full
def test_writing_turns_a_full_device_into_an_error_naming_it() -> None:
    with pytest.raises(WriteError) as exc:
        with writing(DEV_FULL, atomic=True) as path, open(path, "w", encoding="utf-8") as f:
            assert path == DEV_FULL  # a device cannot be replaced: it is written in place
            f.write("x" * 10_000)
    assert exc.value.errno == errno.ENOSPC and exc.value.path == str(DEV_FULL)
    assert str(exc.value).startswith("cannot write /dev/full: No space left on device; free some space")


def test_atomic_writing_keeps_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "results.json"
    with writing(target, atomic=True) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".json" and tmp != target
        tmp.write_text("old", encoding="utf-8")
    assert target.read_text(encoding="utf-8") == "old" and target.stat().st_mode & 0o777 == 0o666 & ~_umask()
    with pytest.raises(KeyError), writing(target, atomic=True) as tmp:
        tmp.write_text("half", encoding="utf-8")
        raise KeyError("a writer bug is not a WriteError")
    assert target.read_text(encoding="utf-8") == "old" and leftovers(target.parent) == ["results.json"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_full_file_system_keeps_the_old_file(full_dir: Path) -> None:
    with pytest.raises(WriteError, match=f"cannot write {full_dir / 'a.txt'}: No space left on device"):
        with writing(full_dir / "a.txt", atomic=True) as tmp:
            tmp.write_bytes(b"x" * 100_000)
    assert leftovers(full_dir) == []


def test_zoo_cache_on_a_full_file_system_keeps_no_partial_entry(small_fs: Path, monkeypatch) -> None:
    from xmeta.models import zoo

    def convert(out: Path) -> Path:
        (out / "model.safetensors").write_bytes(b"x" * 100_000)
        return out

    monkeypatch.setenv("XMETA_CACHE", str(small_fs / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(zoo.ZOO._items, "fake", zoo.ModelSpec("fake", "nobody/fake", "encoder", "MIT", (), convert))
    entry = small_fs / "cache" / "models" / "fake"
    with pytest.raises(WriteError, match=f"cannot write {entry}: No space left on device; .*XMETA_CACHE"):
        zoo.pull("fake")
    assert leftovers(entry.parent) == ["fake.lock"]


def test_episodes_and_llm_responses_into_a_read_only_directory(readonly_dir: Path) -> None:
    from xmeta.data.episode_io import save_episodes
    from xmeta.icl.openai_client import ResponseCache

    with pytest.raises(WriteError, match=f"cannot write {readonly_dir / 'episodes.jsonl'}: "):
        save_episodes(readonly_dir / "episodes.jsonl", [])
    cache = ResponseCache(readonly_dir / "llm")
    with pytest.raises(WriteError, match=f"cannot write {readonly_dir / 'llm'}/ab/abcd.json: "):
        cache.put("abcd", {"prompt": "x"}, {"choices": []})
    assert leftovers(readonly_dir) == []


# ---------------------------------------------------------------- adapt / predict


@pytest.fixture(scope="module")
def adapted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny corpus, a protonet meta checkpoint, and a model adapted from it by ``xmeta adapt``."""
    root = tmp_path_factory.mktemp("write_errors")
    data = write_corpus(root / "data")
    ckpt = write_meta_checkpoint(root / "ckpt", write_encoder(root / "encoder"), algorithm="protonet")
    paths = {"support": data / "ccc_Latn" / "dev.tsv", "texts": data / "ccc_Latn" / "test.tsv", "ckpt": ckpt}
    assert main(["adapt", "--support", str(paths["support"]), "--model", str(ckpt), "--out", str(root / "m")]) == 0
    paths["model"] = root / "m"
    return paths


def predict_argv(adapted: dict[str, Path], output: Path) -> list[str]:
    return ["predict", "--model", str(adapted["model"]), "--input", str(adapted["texts"]), "--output", str(output)]


@needs_dev_full
def test_predict_to_a_full_device_is_one_line_naming_it(adapted, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(predict_argv(adapted, DEV_FULL)) == 2
    err = capsys.readouterr().err
    assert last_line(err).startswith(
        "xmeta predict: error: cannot write /dev/full: No space left on device; free some space"
    )
    assert "Traceback" not in err


@needs_dev_full
def test_predict_to_a_full_standard_output(adapted) -> None:
    argv = ["predict", "--model", str(adapted["model"]), "--input", str(adapted["texts"])]
    with open(DEV_FULL, "w") as stdout:  # `xmeta predict ... > /dev/full`
        done = subprocess.run(
            [sys.executable, "-m", "xmeta.cli", *argv], stdout=stdout, stderr=subprocess.PIPE, text=True
        )
    assert done.returncode == 2, done.stderr
    assert last_line(done.stderr).startswith("xmeta predict: error: cannot write standard output: No space left")


def test_predict_past_a_file_size_limit_leaves_no_partial_file(adapted, tmp_path: Path) -> None:
    out = tmp_path / "preds.jsonl"
    done = run_with_file_size_limit(predict_argv(adapted, out), limit=1000)  # 24 lines are ~3 KB
    assert done.returncode == 2, done.stderr
    assert f"xmeta predict: error: cannot write {out}: File too large" in done.stderr
    assert "Traceback" not in done.stderr and leftovers(tmp_path) == []


def test_predict_on_a_full_file_system_keeps_the_previous_output(
    adapted, small_fs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = small_fs / "preds.jsonl"
    out.write_text("previous\n", encoding="utf-8")
    fill(small_fs)
    assert main(predict_argv(adapted, out)) == 2
    assert f"xmeta predict: error: cannot write {out}: No space left on device" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == "previous\n" and leftovers(small_fs) == ["preds.jsonl"]


def test_predict_into_a_read_only_directory(adapted, readonly_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = readonly_dir / "preds.jsonl"
    assert main(predict_argv(adapted, out)) == 2
    err = capsys.readouterr().err
    assert f"xmeta predict: error: cannot write {out}: " in err and "check the permissions" in err
    assert ("Read-only file system" in err) or ("Permission denied" in err)
    assert leftovers(readonly_dir) == []


def adapt_argv(adapted: dict[str, Path], out: Path) -> list[str]:
    return ["adapt", "--support", str(adapted["support"]), "--model", str(adapted["ckpt"]), "--out", str(out)]


def test_adapt_on_a_full_file_system(adapted, full_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = full_dir / "swh"
    assert main(adapt_argv(adapted, out)) == 2
    err = capsys.readouterr().err
    assert last_line(err).startswith(f"xmeta adapt: error: cannot write {out}: No space left on device")
    assert "Traceback" not in err
    assert leftovers(full_dir) == []  # neither the artifact nor its temporary folder


def test_adapt_past_a_file_size_limit(adapted, tmp_path: Path) -> None:
    out = tmp_path / "swh"
    done = run_with_file_size_limit(adapt_argv(adapted, out), limit=2000)  # the tensors file is larger
    assert done.returncode == 2, done.stderr
    assert last_line(done.stderr).startswith(f"xmeta adapt: error: cannot write {out}: File too large")
    assert "Traceback" not in done.stderr
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- bench


def _unloadable(spec, ctx):  # noqa: ANN001, ANN202
    raise RuntimeError("weights missing")


register_method("fake-write-const", lambda spec, ctx: ConstLearner(), overwrite=True, help="test fake")
register_method("fake-write-broken", _unloadable, overwrite=True, help="test fake that cannot load")


def bench_argv(data_dir: Path, out: Path, methods: str, *extra: str) -> list[str]:
    return ["bench", "--data-dir", str(data_dir), "--langs", "swh_Latn,yor_Latn", "--methods", methods,
            "--q-query", "1", "--episodes", "1", "--out", str(out), "--no-progress", "bootstrap=100",
            "plots=false", *extra]  # fmt: skip


def test_bench_with_every_cell_failed_exits_1(data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "b"
    assert main(bench_argv(data_dir, out, "fake-write-broken")) == 1
    captured = capsys.readouterr()
    assert "K=5 fake-write-broken: failed" in captured.out
    last = last_line(captured.err)
    assert last.startswith("xmeta bench: 2 of 2 cells failed (fake-write-broken K=5 swh_Latn, ")
    assert f"rerun the same command to retry only those (finished cells are stored under {out}/cells" in last
    # --keep-going: the same verdict, exit 0
    assert main(bench_argv(data_dir, out, "fake-write-broken", "--keep-going")) == 0
    assert "xmeta bench: 2 of 2 cells failed" in capsys.readouterr().err


def test_bench_with_some_cells_failed_exits_1_and_says_which(data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "b"
    assert main(bench_argv(data_dir, out, "fake-write-const,fake-write-broken", "--k-shot", "1,2")) == 1
    err = last_line(capsys.readouterr().err)
    assert err.startswith("xmeta bench: 4 of 8 cells failed (fake-write-broken K=1 swh_Latn, ")
    assert main(bench_argv(data_dir, out, "fake-write-const", "--k-shot", "1,2")) == 0
    assert capsys.readouterr().err == ""
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert res["by_k"]["1"]["methods"]["fake-write-const"]["complete"] is True


def test_bench_help_documents_keep_going_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = capsys.readouterr().out
    assert "--keep-going" in text and "exit status: 0 every cell finished; 1 some cells failed" in text


def test_bench_into_a_read_only_directory(data_dir: Path, readonly_dir: Path, capsys) -> None:
    out = readonly_dir / "bench"
    assert main(bench_argv(data_dir, out, "fake-write-const")) == 2
    err = capsys.readouterr().err
    assert last_line(err).startswith(f"xmeta bench: error: cannot write {out}") and "Traceback" not in err
    assert leftovers(readonly_dir) == []


def test_bench_on_a_full_file_system_keeps_no_partial_file(data_dir: Path, full_dir: Path, capsys) -> None:
    out = full_dir / "bench"
    assert main(bench_argv(data_dir, out, "fake-write-const")) == 2
    err = capsys.readouterr().err
    assert last_line(err).startswith(f"xmeta bench: error: cannot write {out}") and "No space left on device" in err
    files = [p for p in out.rglob("*") if p.is_file()]
    assert [p for p in files if p.name.startswith(".tmp-") or p.stat().st_size == 0] == []
