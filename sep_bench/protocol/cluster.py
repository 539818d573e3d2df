"""The cluster settings (params.yaml `cluster:`): where and with what resources each stage runs as a SLURM job.

They change no number in any table, so they are outside the protocol hash and no DVC stage depends on them
(editing them reruns nothing). Resources are given per stage kind (the part of a DVC stage name before ``@``:
data, reconstruct, train, evaluate, selection, released, evaluate_released, report); `default` fills what a
kind leaves out. Per-detector blocks (`detectors.<name>.<kind>`) override the kind's block for one detector,
e.g. more GPUs for training a big backbone.

The training command of a stage is ``${launcher} sep-bench train ...`` (dvc.yaml): the launcher for multi-GPU
training inside a job is params.yaml's top-level `launcher` (a DVC parameter of training, since DDP changes the
numbers), e.g. ``torchrun --nproc_per_node=4 --no-python``; `check_launcher` refuses a job with fewer GPUs than
the launcher starts processes.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["STAGE_KINDS", "Resources", "ClusterSettings", "check_launcher"]

STAGE_KINDS = ("data", "reconstruct", "train", "evaluate", "selection", "released", "evaluate_released", "report")
# SLURM's time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
_TIME = r"^(\d+|\d+:\d{2}|\d+:\d{2}:\d{2}|\d+-\d+|\d+-\d+:\d{2}|\d+-\d+:\d{2}:\d{2})$"
_MEM = r"^\d+[KMGT]?$"
_SBATCH_OPTION = re.compile(r"^--[a-z][a-z0-9-]*(=\S.*)?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_options(options: list[str]) -> list[str]:
    bad = [o for o in options if not _SBATCH_OPTION.match(o) or "\n" in o]
    if bad:
        raise ValueError(f"sbatch options must look like --name or --name=value on one line; got {bad}")
    return options


class Resources(_Strict):
    """One stage kind's job: every field left out is taken from `default` (then from SLURM's own defaults)."""

    gpus: int | None = Field(None, ge=0)        # --gpus-per-node (0: none requested)
    cpus: int | None = Field(None, ge=1)        # --cpus-per-task
    mem: str | None = Field(None, pattern=_MEM)  # --mem, e.g. 32G
    time: str | None = Field(None, pattern=_TIME)  # --time
    partition: str | None = None
    extra: list[str] | None = None              # more sbatch options for this kind, e.g. ["--constraint=a100"]

    @model_validator(mode="after")
    def _options(self) -> "Resources":
        _check_options(self.extra or [])
        return self

    def over(self, base: "Resources") -> "Resources":
        """This block with the fields it leaves out taken from `base`."""
        mine = self.model_dump(exclude_none=True)
        return Resources.model_validate({**base.model_dump(exclude_none=True), **mine})


class ClusterSettings(_Strict):
    partition: str | None = None          # --partition (a kind's own partition wins)
    account: str | None = None            # --account
    qos: str | None = None                # --qos
    array_throttle: int | None = Field(None, ge=1)  # at most this many tasks of one array at a time (--array=...%N)
    extra_sbatch: list[str] = []          # sbatch options for every job, e.g. ["--mail-type=FAIL"]
    job_name_prefix: str = Field("sep-bench", pattern=r"^[A-Za-z0-9._-]+$")
    default: Resources = Resources(cpus=1, time="04:00:00")
    data: Resources = Resources()
    reconstruct: Resources = Resources()
    train: Resources = Resources()
    evaluate: Resources = Resources()
    selection: Resources = Resources()
    released: Resources = Resources()
    evaluate_released: Resources = Resources()
    report: Resources = Resources()
    # detector name -> {stage kind -> Resources} over the kind's block (train@<detector>-<seed>, ...)
    detectors: dict[str, dict[str, Resources]] = {}

    @model_validator(mode="after")
    def _kinds(self) -> "ClusterSettings":
        _check_options(self.extra_sbatch)
        for name, block in self.detectors.items():
            unknown = sorted(set(block) - set(STAGE_KINDS))
            if unknown:
                raise ValueError(f"cluster.detectors.{name} names unknown stage kind(s) {unknown}; "
                                 f"allowed: {', '.join(STAGE_KINDS)}")
        return self

    def resources(self, kind: str, detector: str | None = None) -> Resources:
        """The resolved resources of one stage: detector block > kind block > default (a stage of a kind this
        file has no block for, e.g. one added to dvc.yaml, gets `default`)."""
        res = getattr(self, kind).over(self.default) if kind in STAGE_KINDS else self.default
        own = self.detectors.get(detector or "", {}).get(kind)
        return own.over(res) if own else res


def check_launcher(launcher: str, gpus: int | None, stage: str) -> None:
    """A ValueError when `launcher` starts more processes per node than the job has GPUs (a job with GPUs)."""
    m = re.search(r"--nproc[-_]per[-_]node[= ](\d+)", launcher or "")
    if m and gpus and int(m.group(1)) > gpus:
        raise ValueError(f"{stage}: the launcher {launcher!r} starts {m.group(1)} processes per node but the job "
                         f"asks for {gpus} GPU(s) (cluster.train.gpus / cluster.selection.gpus)")
