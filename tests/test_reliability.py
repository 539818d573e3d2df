"""Reliability: a `sep-bench train` killed with SIGKILL resumes to the same result; outputs are written atomically;
SIGTERM ends the MLflow run as failed, and a run left RUNNING by a killed process is closed by the next run of the
same stage; parallel evaluations share one sqlite DB without losing runs or metrics; configuration errors are one
line with exit code 2."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file
from typer.testing import CliRunner

from sep_bench.cli import app
from sep_bench.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from sep_bench.engine.evaluate import evaluate
from sep_bench.engine.train import train
from sep_bench.io import atomic_path, write_json
from sep_bench.protocol import load_params, resolve

runner = CliRunner()
BIN = Path(sys.executable).with_name("sep-bench")
TRAIN_OUT = "runs/tiny/npr/seed0/train"

# Injected into `sep-bench` subprocesses (PYTHONPATH): sleep after each checkpoint save, so that a test can stop
# the process at a chosen step of a run that otherwise takes a second. Nothing else changes.
SITECUSTOMIZE = '''
import os
_delay = float(os.environ.get("SEP_BENCH_TEST_SAVE_DELAY") or 0)
if _delay:
    import time
    import sep_bench.engine.checkpoint as _ck
    _real = _ck.save_checkpoint
    def _slow(*args, **kwargs):
        _real(*args, **kwargs)
        time.sleep(_delay)
    _ck.save_checkpoint = _slow
'''


def _cmd(*args: str) -> list[str]:
    return [str(BIN), *args] if BIN.exists() else [sys.executable, "-m", "sep_bench.main", *args]


def _env(workdir: Path, inject: Path | None = None, delay: float = 0.0) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "DVC_ROOT": str(workdir), "MLFLOW_DISABLE_TELEMETRY": "true", "COLUMNS": "200"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("SEP_BENCH_PARENT_RUN_ID", None)
    env.pop("DVC_STAGE", None)
    if inject is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(inject), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["SEP_BENCH_TEST_SAVE_DELAY"] = str(delay)
    return env


def _inject(tmp_path: Path) -> Path:
    d = tmp_path / "inject"
    d.mkdir(exist_ok=True)
    (d / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return d


def _set_train(workdir: Path, **train) -> None:
    p = yaml.safe_load((workdir / "params.yaml").read_text())
    p["profiles"]["tiny"]["train"].update(train)
    (workdir / "params.yaml").write_text(yaml.safe_dump(p))


def _position(out: Path) -> tuple[int, int] | None:
    try:
        pos = json.loads((out / "last.json").read_text())["position"]
        return pos["epoch"], pos["step"]
    except (OSError, ValueError, KeyError):
        return None


def _wait_for(pred, proc: subprocess.Popen, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (rc {proc.returncode}) before {what}: "
                                 + (proc.stdout.read() if proc.stdout else ""))
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(path).items() if not k.startswith("rng.")}


def _same_tensors(a: Path, b: Path) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys() and any(k.startswith("model.") for k in ta)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def _temps(folder: Path) -> list[Path]:
    return sorted(folder.rglob(".*.tmp"))


# ---- SIGKILL at a random step, then resume -------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_sigkill_at_a_random_step_then_resume_ends_identical_to_an_uninterrupted_run(workdir, tmp_path):
    """A tracked `sep-bench train` SIGKILLed at a random step: its outputs are complete or refused as a whole, its
    MLflow run stays RUNNING (a SIGKILLed process cannot end it), and the restarted command closes that run as
    FAILED, resumes from the last checkpoint and ends bit-identical to an uninterrupted run."""
    _set_train(workdir, epochs=2, batch_size=4, checkpoint_every_steps=1)  # 6 steps per epoch, 12 in all
    steps_per_epoch, total = 6, 12
    seed = int(os.environ.get("SEP_BENCH_KILL_SEED", time.time_ns() % 10_000))
    target = random.Random(seed).randint(1, total - 2)  # a global step with at least one checkpoint before it
    print(f"SEP_BENCH_KILL_SEED={seed}: kill at global step >= {target}")
    env = _env(workdir)

    # the uninterrupted reference (untracked), in parallel with the run that will be killed
    ref = subprocess.Popen(_cmd("train", "--detector", "npr", "--no-track", "--out", "ref"), cwd=workdir, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = workdir / TRAIN_OUT
    proc = subprocess.Popen(_cmd("train", "--detector", "npr"), cwd=workdir,
                            env=_env(workdir, _inject(tmp_path), delay=0.15), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)

    def reached() -> bool:
        pos = _position(out)
        return pos is not None and pos[0] * steps_per_epoch + pos[1] >= target

    _wait_for(reached, proc, 240, f"global step {target}")
    time.sleep(random.Random(seed + 1).uniform(0.0, 0.2))  # anywhere in the next save, sleep or step
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = _position(out)
    print("killed at (epoch, step)", killed_at)
    assert killed_at is not None and killed_at != (2, 0), "the run finished before the kill"
    # whatever is on disk either loads completely or is refused as a whole: no truncated output that looks valid
    for f in out.iterdir():
        if f.suffix == ".json" and not f.name.startswith("."):
            json.loads(f.read_text())
        if f.suffix == ".safetensors" and not f.name.startswith("."):
            try:
                load_checkpoint(f)
            except CheckpointError as err:
                assert "different saves" in str(err)
    _, runs = _runs(workdir)
    assert [r.info.status for r in runs] == ["RUNNING"]  # the documented limit of SIGKILL
    killed_run = runs[0].info.run_id

    ref_log = ref.communicate(timeout=240)[0]
    assert ref.returncode == 0, ref_log
    res = subprocess.run(_cmd("train", "--detector", "npr"), cwd=workdir, env=env, capture_output=True, text=True,
                         timeout=240)
    assert res.returncode == 0, res.stderr
    log = res.stdout + res.stderr
    assert "resuming npr at epoch" in log or "different saves" in log, log
    assert _temps(workdir / "runs") == []  # temporaries of the killed process were removed

    # the next run of the stage closed the stale one
    _, runs = _runs(workdir)
    status = {r.info.run_id: r for r in runs}
    assert status[killed_run].info.status == "FAILED"
    assert "no longer exists" in status[killed_run].data.tags["sep_bench.error"]
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]

    for name in ("best.safetensors", "last.safetensors"):
        _same_tensors(workdir / "ref" / name, out / name)
    hist = lambda p: json.loads((p / "train.json").read_text())["history"]  # noqa: E731
    assert hist(out) == hist(workdir / "ref")

    spec = resolve(load_params(workdir / "params.yaml"), "npr")
    m_ref = evaluate(spec, workdir / "ref" / "best.safetensors", tmp_path / "a.json", tmp_path / "a.parquet")
    m_res = evaluate(spec, out / "best.safetensors", tmp_path / "b.json", tmp_path / "b.parquet")
    drop = lambda m: {k: v for k, v in m.items() if k not in ("checkpoint", "seconds", "efficiency")}  # noqa: E731
    assert m_ref["efficiency"]["flops_per_image"] == m_res["efficiency"]["flops_per_image"]
    assert drop(m_ref) == drop(m_res)  # includes checkpoint_sha256: the checkpoint files are byte-identical
    assert pd.read_parquet(tmp_path / "a.parquet").equals(pd.read_parquet(tmp_path / "b.parquet"))


# ---- atomic outputs -------------------------------------------------------------------------------------------


def _spec(workdir, **over):
    return resolve(load_params(workdir / "params.yaml", over), "npr")


@pytest.mark.timeout(120)
def test_a_write_that_fails_midway_leaves_the_previous_outputs_intact(workdir, monkeypatch):
    spec = _spec(workdir, **{"profiles.tiny.train.epochs": 1})
    train(spec, workdir / "r")
    ckpt = workdir / "r" / "best.safetensors"
    old_ckpt, old_meta = ckpt.read_bytes(), (workdir / "r" / "best.json").read_bytes()
    evaluate(spec, ckpt, workdir / "m.json", workdir / "p.parquet")
    old_metrics, old_preds = (workdir / "m.json").read_bytes(), (workdir / "p.parquet").read_bytes()

    def disk_full_after_half(real):
        def write(*args, **kwargs):
            target = Path(next(a for a in args if isinstance(a, (str, Path)) and str(a).endswith(".tmp")))
            real(*args, **kwargs)
            data = target.read_bytes()
            target.write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return write

    import sep_bench.engine.checkpoint as ck

    model, _ = ck.load_detector(ckpt)
    with monkeypatch.context() as m:
        m.setattr(ck, "save_file", disk_full_after_half(ck.save_file))
        with pytest.raises(OSError, match="No space left"):
            save_checkpoint(ckpt, model, {"detector": "npr", "epoch": 99})
    assert ckpt.read_bytes() == old_ckpt and (workdir / "r" / "best.json").read_bytes() == old_meta
    load_checkpoint(ckpt)

    with monkeypatch.context() as m:
        m.setattr(pd.DataFrame, "to_parquet", disk_full_after_half(pd.DataFrame.to_parquet))
        with pytest.raises(OSError, match="No space left"):
            evaluate(spec, ckpt, workdir / "m.json", workdir / "p.parquet")
    assert (workdir / "p.parquet").read_bytes() == old_preds and (workdir / "m.json").read_bytes() == old_metrics

    from sep_bench.report.tables import write_table

    (workdir / "t.md").write_text("previous table\n")
    with monkeypatch.context() as m:
        m.setattr(Path, "write_text", disk_full_after_half(Path.write_text))
        with pytest.raises(OSError, match="No space left"):
            write_json(workdir / "m.json", {"half": "written"})
        with pytest.raises(OSError, match="No space left"):
            write_table([json.loads(old_metrics)], workdir / "t", "acc")
    assert (workdir / "m.json").read_bytes() == old_metrics and (workdir / "t.md").read_text() == "previous table\n"
    assert _temps(workdir) == []


@pytest.mark.timeout(120)
def test_kill_between_the_tensor_and_json_renames_is_detected_and_training_still_ends_identical(workdir, monkeypatch, caplog):
    """A process killed after ``last.safetensors`` was replaced but before ``last.json`` was: the pair is refused
    (its tokens differ), never resumed at the wrong position; training starts over and ends identical."""
    over = {"profiles.tiny.train.epochs": 2, "profiles.tiny.train.checkpoint_every_steps": 1}
    spec = _spec(workdir, **over)
    train(spec, workdir / "full")

    import sep_bench.engine.checkpoint as ck

    calls = {"n": 0}
    real_write_json = ck.write_json

    def killed_before_json(path, obj):
        calls["n"] += Path(path).name == "last.json"
        if calls["n"] == 4 and Path(path).name == "last.json":  # last.safetensors is already at (1, 1)
            raise KeyboardInterrupt("killed between the two renames")
        real_write_json(path, obj)

    with monkeypatch.context() as m:
        m.setattr(ck, "write_json", killed_before_json)
        with pytest.raises(KeyboardInterrupt):
            train(spec, workdir / "cut")
    with pytest.raises(CheckpointError, match="different saves"):
        load_checkpoint(workdir / "cut" / "last.safetensors")
    train(spec, workdir / "cut")
    assert "cannot resume" in caplog.text and "different saves" in caplog.text
    for name in ("best.safetensors", "last.safetensors"):
        _same_tensors(workdir / "full" / name, workdir / "cut" / name)


KILL_WRITER = """
import sys
from sep_bench.io import write_json
blob = {"values": list(range(200_000))}
i = 0
while True:
    blob["i"] = i
    write_json(sys.argv[1], blob)
    i += 1
"""


@pytest.mark.timeout(120)
def test_sigkill_during_writes_never_leaves_a_truncated_file_and_temporaries_are_cleaned(tmp_path):
    target = tmp_path / "out" / "metrics.json"
    for trial in range(3):
        proc = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(target)], env=_env(tmp_path))
        end = time.monotonic() + 60
        while not target.exists():
            assert proc.poll() is None and time.monotonic() < end
            time.sleep(0.01)
        time.sleep(random.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        data = json.loads(target.read_text())  # complete: one of the versions, never a prefix
        assert len(data["values"]) == 200_000
    # the killed writers' temporaries (if a kill hit mid-write) go with the next write into the folder; so does
    # one left by a process that certainly no longer exists
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    from sep_bench.io import _HOST

    stale = target.parent / f".metrics.json.{_HOST}-{dead.pid}.abcd1234.tmp"
    stale.write_text('{"values": [1, 2')
    write_json(target, {"done": True})
    assert _temps(tmp_path / "out") == [] and json.loads(target.read_text()) == {"done": True}
    # a temporary of a live process is left alone
    with atomic_path(tmp_path / "out" / "other.json") as tmp:
        tmp.write_text("{}")
        write_json(target, {"again": True})
        assert tmp.exists()


# ---- MLflow run status on SIGTERM / SIGKILL ------------------------------------------------------------------


def _runs(workdir: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("test/tiny")
    return client, (client.search_runs([exp.experiment_id]) if exp else [])


@pytest.mark.timeout(240)
def test_sigterm_ends_the_run_failed_and_removes_temporaries(workdir, tmp_path):
    """SIGTERM (what DVC, a job scheduler or `kill` sends) becomes an exception: the MLflow run ends FAILED with the
    reason, and temporary files are removed. (SIGKILL cannot be handled: see the test above.)"""
    _set_train(workdir, epochs=2, batch_size=4, checkpoint_every_steps=1)
    out = workdir / TRAIN_OUT
    proc = subprocess.Popen(_cmd("train", "--detector", "npr"), cwd=workdir,
                            env=_env(workdir, _inject(tmp_path), delay=0.15), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _wait_for(lambda: _position(out) is not None, proc, 200, "the first checkpoint")
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    assert proc.returncode not in (0, None)
    _, runs = _runs(workdir)
    assert len(runs) == 1 and runs[0].info.status in ("FAILED", "KILLED"), runs[0].info.status
    assert "Terminated" in runs[0].data.tags["sep_bench.error"]
    assert _temps(out) == []
    last = load_checkpoint(out / "last.safetensors")[1]  # a usable checkpoint to resume from
    assert last["position"]["epoch"] * 6 + last["position"]["step"] >= 1


# ---- concurrent evaluations into one sqlite DB ---------------------------------------------------------------


@pytest.mark.timeout(300)
def test_parallel_evaluations_into_one_fresh_sqlite_db_lose_no_run_and_no_metric(workdir):
    train(_spec(workdir, **{"profiles.tiny.train.epochs": 1}), workdir / "ck")
    assert not (workdir / "mlflow.db").exists()
    seeds = [0, 1, 2]
    procs = [subprocess.Popen(_cmd("evaluate", "--detector", "npr", "--seed", str(s), "--checkpoint",
                                   str(workdir / "ck" / "best.safetensors")),
                              cwd=workdir, env=_env(workdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for s in seeds]
    outs = [p.communicate(timeout=280)[0] for p in procs]
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o
    client, runs = _runs(workdir)
    assert len(runs) == len(seeds) and all(r.info.status == "FINISHED" for r in runs)
    assert sorted(r.data.tags["sep_bench.seed"] for r in runs) == ["0", "1", "2"]
    for r in runs:
        m = json.loads((workdir / f"results/metrics/tiny/npr/seed{r.data.tags['sep_bench.seed']}.json").read_text())
        want = {f"{g}.{k}": v for g, gm in m["generators"].items() for k, v in gm.items() if v is not None}
        want.update({f"mean.{k}": v for k, v in m["mean"].items() if v is not None})
        want["skipped"] = 0
        want.update({f"efficiency.{k}": v for k, v in m["efficiency"].items() if isinstance(v, (int, float))})
        assert r.data.metrics == pytest.approx(want)
        assert len(r.data.params) > 10
        arts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {f"seed{r.data.tags['sep_bench.seed']}.json", f"seed{r.data.tags['sep_bench.seed']}.parquet"} <= arts


# ---- configuration errors: one line, exit code 2, no traceback -----------------------------------------------


def _params_with(workdir: Path, name: str, edit) -> str:
    p = yaml.safe_load((workdir / "params.yaml").read_text())
    edit(p)
    (workdir / name).write_text(yaml.safe_dump(p))
    return name


@pytest.mark.timeout(180)
def test_configuration_errors_are_one_line_naming_the_fix(workdir, tmp_path, tiny_tree):
    res = runner.invoke(app, ["train", "--detector", "npr", "--no-track", "--out", "ck"])
    assert res.exit_code == 0, res.output
    ckpt = str(workdir / "ck" / "best.safetensors")
    corrupt = workdir / "corrupt" / "best.safetensors"
    corrupt.parent.mkdir()
    corrupt.write_bytes(Path(ckpt).read_bytes()[:100])
    Path(corrupt.with_suffix(".json")).write_bytes((workdir / "ck" / "best.json").read_bytes())
    img = str(next((tiny_tree / "g2" / "val" / "ai").iterdir()))

    def data(**kw):
        return lambda p: p["profiles"]["tiny"]["data"].update(kw)

    cases = [
        # unknown detector (a params block, but nothing registered under the name)
        (["train", "-d", "ghost"], lambda p: p["detectors"].update(ghost={}), "unknown detector 'ghost'; available:"),
        (["predict", img, "-d", "ghost", "-c", ckpt], None, "best.safetensors is a checkpoint of detector 'npr', not 'ghost'"),
        # unknown generator
        (["train", "-d", "npr"], data(train_generators=["g7"]), "train generator(s) ['g7'] not found in split 'train'; present: g1"),
        (["evaluate", "-d", "npr", "--checkpoint", ckpt], data(test_generators=["g1", "sdxl"]),
         "test generator(s) ['sdxl'] not found in split 'val'; present: g1, g2"),
        # missing dataset folder
        (["train", "-d", "npr"], data(root=str(tmp_path / "nowhere")), "does not exist (build or download it first)"),
        (["evaluate", "-d", "npr", "--checkpoint", ckpt], data(root=str(tmp_path / "nowhere")), "does not exist"),
        # wrong types in params.yaml
        (["train", "-d", "npr"], lambda p: p["profiles"]["tiny"]["train"].update(epochs="two"),
         "profiles.tiny.train.epochs: Input should be a valid integer"),
        (["train", "-d", "npr"], lambda p: p["profiles"]["tiny"]["train"].update(batch_size=0),
         "profiles.tiny.train.batch_size: Input should be greater than or equal to 1"),
        (["train", "-d", "npr"], lambda p: p["detectors"]["npr"]["optim"].update(lr="fast"),
         "detectors.npr.optim.lr: Input should be a valid number"),
        (["train", "-d", "npr"], lambda p: p["detectors"]["npr"]["model"].update(crop_size=[32]),
         "detectors.npr.model.crop_size: Input should be a valid integer"),
        (["train", "-d", "npr"], lambda p: p["profiles"]["tiny"].update(amp="fp8"), "profiles.tiny.amp: Input should be"),
        (["train", "-d", "npr"], lambda p: p["profiles"]["tiny"]["data"].update(max_skip_fraction="lots"),
         "profiles.tiny.data.max_skip_fraction: Input should be a valid number"),
        (["train", "-d", "npr"], lambda p: p["detectors"]["npr"].update(pretrained=True),
         "pretrained: true, but this detector has no default hub weights; set pretrained: false"),
        (["train", "-d", "npr"], lambda p: p["detectors"]["npr"].update(pretrained="weights/none.pth"),
         "pretrained weights file 'weights/none.pth' not found"),
        # a checkpoint for another detector, and a damaged checkpoint
        (["evaluate", "-d", "sep", "--checkpoint", ckpt], lambda p: p["detectors"].update(sep={}),
         "best.safetensors is a checkpoint of detector 'npr', not 'sep'; pass --detector npr"),
        (["predict", img, "-d", "sep", "-c", ckpt], None, "is a checkpoint of detector 'npr', not 'sep'"),
        (["evaluate", "-d", "npr", "--checkpoint", str(corrupt)], None, "is unreadable"),
        (["evaluate", "-d", "npr", "--checkpoint", str(tmp_path / "none.safetensors")], None, "not found"),
        (["train", "-d", "npr"], lambda p: p["profiles"]["tiny"]["train"].update(feature_cache=True),
         "train.feature_cache: npr has no frozen backbone (frozen_features is False); set train.feature_cache: false"),
    ]
    for i, (args, edit, needle) in enumerate(cases):
        extra = ["--params", _params_with(workdir, f"p{i}.yaml", edit)] if edit else []
        if args[0] in ("train", "evaluate"):
            extra.append("--no-track")
        if args[0] == "predict":
            extra += ["--device", "cpu"]
        res = runner.invoke(app, [*args, *extra, *(["--out", f"o{i}"] if args[0] == "train" else [])])
        errors = [ln for ln in res.output.splitlines() if "error" in ln.lower()]
        assert res.exit_code == 2, (args, res.output)
        # one line (never wrapped at the console width), naming the problem and the fix; no traceback
        assert len(errors) == 1 and errors[0].startswith("error: ") and needle in errors[0], (args, res.output)
        assert "Traceback" not in res.output and "File \"" not in res.output


@pytest.mark.timeout(120)
def test_only_runs_of_dead_processes_on_this_host_are_closed_as_stale(workdir):
    import platform

    from sep_bench.tracking import PROCESS_TAG, Tracker

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    kw = dict(uri=uri, experiment="test/tiny", tags={}, params={})
    live = Tracker(run_name="train/npr/seed0", **kw)  # this process: alive, left RUNNING
    dead_proc = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_proc.wait()
    client = live.client
    dead = client.create_run(live.experiment_id, run_name="train/npr/seed0",
                             tags={PROCESS_TAG: f"{platform.node()}:{dead_proc.pid}:12345"}).info.run_id
    remote = client.create_run(live.experiment_id, run_name="train/npr/seed0",
                               tags={PROCESS_TAG: f"other-host:{dead_proc.pid}:12345"}).info.run_id
    other_stage = client.create_run(live.experiment_id, run_name="evaluate/npr/seed0",
                                    tags={PROCESS_TAG: f"{platform.node()}:{dead_proc.pid}:12345"}).info.run_id
    with Tracker(run_name="train/npr/seed0", **kw):
        pass
    status = lambda rid: client.get_run(rid).info.status  # noqa: E731
    assert status(dead) == "FAILED" and "no longer exists" in client.get_run(dead).data.tags["sep_bench.error"]
    assert status(live.run_id) == status(remote) == status(other_stage) == "RUNNING"
    with live:
        pass
    assert status(live.run_id) == "FINISHED"
