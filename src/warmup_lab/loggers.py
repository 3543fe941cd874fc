"""Remote mirrors of a run's local files (the local files are the source of truth).

`logger=wandb` (default) mirrors per-step metrics, evaluations and the summary to Weights & Biases.
With no API key it goes offline on its own and says so once. When online init cannot reach the server
within `logger.init_timeout` seconds, the run logs offline into its directory (so `wandb sync` can
upload it later) and says so in one line. Any other W&B failure is a warning: the run and its local
files go on. `finish()` is always called by the trainer (in a `finally`), which is what
keeps jobs of a multirun from reusing the first job's W&B run (harness pitfall 4, docs/definitions.md).

Every run is filed like a tidy W&B project: a group (`logger.group`: a sweep's experiment, a search's
or an advice's name; else the experiment, else the run's name), a job_type (`logger.job_type`: `train`,
`probe` for a search's probes, `advise`, `lr-find`) and tags naming its task, model, optimizer and warmup
(plus `logger.tags`), so the W&B UI can filter and group runs without reading their configs.
"""

from __future__ import annotations

import os
import secrets
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

WANDB_ID_FILE = "wandb_id.txt"
DEFAULT_INIT_TIMEOUT_S = 15.0  # conf/logger/wandb.yaml `init_timeout`
_said_offline = False


class NullLogger:
    """No remote mirror."""

    mode = "none"

    def log_steps(self, rows: Sequence[Mapping[str, Any]]) -> None: ...

    def log_summary(self, summary: Mapping[str, Any]) -> None: ...

    def finish(self, ok: bool = True) -> None: ...


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        hosts = netrc.netrc().hosts
        return any("wandb" in host for host in hosts)
    except (OSError, netrc.NetrcParseError):
        return False


def _resolve_mode(requested: str) -> str:
    env = os.environ.get("WANDB_MODE")
    if requested != "auto":
        return requested
    if env in ("offline", "online", "disabled", "dryrun"):
        return "offline" if env == "dryrun" else env
    return "online" if _has_api_key() else "offline"


JOB_TYPES = ("train", "probe", "advise", "lr-find")


def run_group(cfg: DictConfig) -> str:
    """The W&B group of a run: logger.group, else the experiment's name, else the run's name."""
    return str(OmegaConf.select(cfg, "logger.group") or OmegaConf.select(cfg, "experiment_name")
               or OmegaConf.select(cfg, "name"))


def job_type(cfg: DictConfig) -> str:
    """logger.job_type: one of JOB_TYPES for warmup-lab's own commands (W&B takes any short name)."""
    return str(OmegaConf.select(cfg, "logger.job_type") or "train")[:64]


def run_tags(cfg: DictConfig) -> list[str]:
    """`task:..`, `model:..`, `optimizer:..`, `warmup:<shape>@<steps>`, then logger.tags (W&B keeps 64 chars)."""
    tags = [f"{key}:{OmegaConf.select(cfg, f'{key}.name')}" for key in ("task", "model", "optimizer")
            if OmegaConf.select(cfg, f"{key}.name") is not None]
    try:
        from warmup_lab.schedules import schedule_from_cfg

        sched = schedule_from_cfg(cfg)
        tags.append(f"warmup:{sched.describe()['warmup']}@{sched.warmup_steps}")
    except Exception:  # noqa: BLE001 - a config without a full schedule (e.g. advise's own record) has no warmup tag
        pass
    return [t[:64] for t in dict.fromkeys([*tags, *map(str, OmegaConf.select(cfg, "logger.tags") or [])])]


class WandbLogger:
    """One W&B run per training run, resumed (same id) when the training run resumes."""

    def __init__(self, cfg: DictConfig, run_dir: Path, config: Mapping[str, Any]):
        global _said_offline
        import wandb

        lcfg = cfg.logger
        self.mode = _resolve_mode(str(lcfg.get("mode", "auto")))
        if self.mode == "offline" and not _said_offline and lcfg.get("mode", "auto") == "auto":
            print(
                "wandb: no API key found, logging offline into each run directory "
                "(`wandb sync <run_dir>/wandb/offline-run-*` uploads later)",
                flush=True,
            )
            _said_offline = True
        id_file = run_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)  # not the run's RNG
        id_file.write_text(run_id + "\n")
        wandb_dir = Path(str(lcfg.dir)) if lcfg.get("dir") else run_dir
        wandb_dir.mkdir(parents=True, exist_ok=True)
        self._wandb = wandb
        timeout = float(lcfg.get("init_timeout") or DEFAULT_INIT_TIMEOUT_S)
        args = dict(
            project=str(lcfg.project),
            entity=lcfg.get("entity"),
            group=run_group(cfg),
            job_type=job_type(cfg),
            name=f"{cfg.name}-{run_dir.name.rsplit('-', 1)[-1]}",
            tags=run_tags(cfg),
            config=dict(config),
            dir=str(wandb_dir),
            id=run_id,
            resume="allow",
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off", init_timeout=timeout,
                                    x_disable_stats=not lcfg.get("system_metrics", True),
                                    x_disable_meta=not lcfg.get("machine_metadata", True),
                                    x_save_requirements=bool(lcfg.get("machine_metadata", True))),
        )
        try:
            self.run = wandb.init(mode=self.mode, **args)
        except Exception as err:  # noqa: BLE001 - any online failure: keep a copy offline instead
            if self.mode != "online":
                raise
            print(f"wandb: online init failed within {timeout:g}s ({type(err).__name__}); logging offline into "
                  f"{wandb_dir}/wandb (`wandb sync` uploads it later)", flush=True)
            self.mode = "offline"
            wandb.teardown()  # the failed online attempt still holds the run id
            self.run = wandb.init(mode="offline", **args)

    def log_steps(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for row in rows:
            step = int(row["step"])
            self.run.log({k: v for k, v in row.items() if k != "step" and v is not None}, step=step)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        for key, value in summary.items():
            if isinstance(value, (int, float, str, bool)) or value is None:
                self.run.summary[key] = value

    def finish(self, ok: bool = True) -> None:
        self.run.finish(exit_code=0 if ok else 1)


class SafeLogger:
    """Wraps a logger so that a failure becomes one warning and the run goes on without it."""

    def __init__(self, inner: Any):
        self.inner, self.mode = inner, inner.mode

    def _call(self, name: str, *args: Any) -> None:
        if self.inner is None:
            return
        try:
            getattr(self.inner, name)(*args)
        except Exception as err:  # noqa: BLE001 - a mirror must never stop a run
            warnings.warn(f"W&B {name} failed ({type(err).__name__}: {err}); continuing with local files only")
            self.inner = None

    def log_steps(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._call("log_steps", rows)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        self._call("log_summary", summary)

    def finish(self, ok: bool = True) -> None:
        self._call("finish", ok)


def make_logger(cfg: DictConfig, run_dir: Path, config: Mapping[str, Any]) -> SafeLogger | NullLogger:
    name = str(OmegaConf.select(cfg, "logger.name", default="none"))
    if name == "none":
        return NullLogger()
    if name != "wandb":
        from warmup_lab.errors import ConfigError

        raise ConfigError("logger", name, "one of wandb, none")
    try:
        return SafeLogger(WandbLogger(cfg, run_dir, config))
    except Exception as err:  # noqa: BLE001 - init errors (unwritable dir, timeout) must not stop the run
        warnings.warn(f"W&B init failed ({type(err).__name__}: {err}); continuing with local files only")
        return NullLogger()
