"""Where a run lives and what it leaves behind.

A run is keyed by a hash of its resolved config (seed included; keys that cannot change the result
excluded), and its directory carries that hash: two jobs never collide, and a re-run of a sweep finds
what is already done. Files are written atomically, so a run killed at any moment leaves either the
old file or the new one, never half of one, and with the user's umask (collaborators can read them).

One process owns a run directory at a time (`owned`: an flock that dies with its process, so a killed
run never leaves a stale lock), and a directory is only reused by the config that made it
(`check_same_config`): nothing is skipped, resumed or overwritten across configs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from omegaconf import DictConfig, OmegaConf

SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
EVAL_FILE = "eval.csv"
CHECKPOINT_FILE = "checkpoint.pt"
LOCK_FILE = ".lock"

# Statuses. A finished run is never redone; an `error`, `interrupted` or `preempted` run is resumed.
COMPLETED, DIVERGED, FAILED, ERROR = "completed", "diverged", "failed_to_train", "error"
INTERRUPTED, PREEMPTED = "interrupted", "preempted"
FINISHED_STATUSES = (COMPLETED, DIVERGED, FAILED)
STATUSES = FINISHED_STATUSES + (ERROR, INTERRUPTED, PREEMPTED)

# Keys that name, place or display a run but cannot change its result. `threads` is not one of them:
# the order of float reductions depends on it (issue 9 saw digits' final accuracy move with it).
HASH_EXCLUDED = ("hydra", "out", "runs_root", "name", "logger", "experiment_name",
                 "comparisons", "selected_from", "compare_on")  # a preset's declarations for its report (stability.declared)
HASH_EXCLUDED_NESTED = (("train", "progress"), ("train", "keep_checkpoint"))
# Keys that change how a run computes (float rounding), not what it studies: hashed, so a skip or resume
# never mixes them, but not setting keys of a table.
EXECUTION_KEYS = ("threads", "device")


DATA_HASH_KEY = "data_sha256"  # the content of data.path: an edited text file is another run


def _resolved(data: dict[str, Any], cfg: DictConfig) -> dict[str, Any]:
    """What a config leaves to the machine or the disk, made explicit, unless already recorded.

    `threads: null` means torch's default, which follows OMP_NUM_THREADS and the machine (and changes
    results); a text file named by data.path can change under the same name.
    """
    if data.get("threads") is None and "threads" in cfg:
        import torch  # torch's own default, as the run will use it

        data["threads"] = torch.get_num_threads()
    path = OmegaConf.select(cfg, "data.path", default=None)
    if path and DATA_HASH_KEY not in data and Path(str(path)).expanduser().is_file():
        data[DATA_HASH_KEY] = hashlib.sha256(Path(str(path)).expanduser().read_bytes()).hexdigest()[:16]
    return data


def result_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config minus the keys that cannot change the result, plus the resolved thread count and data hash."""
    keys = [k for k in cfg.keys() if k not in HASH_EXCLUDED]
    data = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)
    for outer, inner in HASH_EXCLUDED_NESTED:
        if isinstance(data.get(outer), dict):
            data[outer].pop(inner, None)
    return _resolved(data, cfg)  # type: ignore[arg-type]


def config_hash(cfg: DictConfig, length: int = 10) -> str:
    blob = json.dumps(result_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def run_dir_for(cfg: DictConfig) -> Path:
    """`out` if given, else <runs_root>/<name>-<hash> (the same path Hydra's run/sweep dir uses)."""
    if cfg.get("out"):
        return Path(str(cfg.out))
    return Path(str(cfg.runs_root)) / f"{cfg.name}-{config_hash(cfg)}"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename; the file gets the umask's permissions (mkstemp's are 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_config(run_dir: Path, cfg: DictConfig) -> None:
    """config.yaml, with the thread count and data hash the run used (what a later check compares)."""
    data = _resolved(OmegaConf.to_container(cfg, resolve=True), cfg)  # type: ignore[arg-type]
    atomic_write_text(run_dir / CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.create(data)))


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def check_same_config(run_dir: Path, cfg: DictConfig) -> None:
    """Raise ConfigError when `run_dir` holds a run of another config (its config.yaml differs in a result key).

    Called before anything is skipped, resumed or overwritten, so a reused `out=` never returns,
    continues or clobbers another config's run.
    """
    from warmup_lab.errors import ConfigError

    path = run_dir / CONFIG_FILE
    if not path.exists():
        others = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE)
        if others:  # files no config vouches for: never skipped, resumed or overwritten
            raise ConfigError("out", str(run_dir), f"holds {', '.join(others[:4])}{' ...' if len(others) > 4 else ''} "
                              f"but no {CONFIG_FILE}, so nothing says which config made them; nothing was touched: "
                              "choose another out= (or runs_root=), or delete that directory")
        return
    try:
        stored = _flat(result_config(OmegaConf.load(path)))  # type: ignore[arg-type]
    except Exception as err:  # noqa: BLE001 - an unreadable config.yaml cannot vouch for the files beside it
        raise ConfigError("out", str(run_dir), f"its {CONFIG_FILE} is unreadable ({type(err).__name__}); "
                          "choose another out= or delete that directory") from None
    wanted = _flat(result_config(cfg))
    diff = sorted(k for k in stored.keys() | wanted.keys() if stored.get(k, "<unset>") != wanted.get(k, "<unset>"))
    if DATA_HASH_KEY in diff:
        raise ConfigError("data.path", OmegaConf.select(cfg, "data.path"), f"its content changed since the run in "
                          f"{run_dir} started (sha256 {stored.get(DATA_HASH_KEY)} there, {wanted.get(DATA_HASH_KEY)} "
                          "now); restore the file to resume, or choose another out= / delete that directory to start over")
    if diff:
        shown = ", ".join(f"{k}={stored.get(k, '<unset>')!r} there, {wanted.get(k, '<unset>')!r} here"
                          for k in diff[:3]) + (f" (+{len(diff) - 3} more)" if len(diff) > 3 else "")
        raise ConfigError("out", str(run_dir), f"holds a run of another config ({shown}); nothing was touched: "
                          "choose another out=, or delete that directory to redo it")


def remove_if_empty(run_dir: Path) -> None:
    """Remove `run_dir` when it holds nothing but its lock file (what a rejected config leaves)."""
    try:
        if {p.name for p in run_dir.iterdir()} <= {LOCK_FILE}:
            (run_dir / LOCK_FILE).unlink(missing_ok=True)
            run_dir.rmdir()
    except OSError:
        pass


class Owner:
    """This process's claim on a run directory: a token written into its lock file when the lock is taken.

    An flock only excludes processes that lock the same file: a deleted `.lock` or a removed and
    re-created directory lets a second process in. So every write checks the token first; a writer
    whose token is gone stops (RunTakenOver) instead of mixing its rows with the other's.
    """

    def __init__(self, run_dir: Path, token: str):
        self.run_dir, self.token = run_dir, token

    def _holder(self) -> str | None:
        try:
            return (self.run_dir / LOCK_FILE).read_text()
        except OSError:
            return None

    def check(self) -> None:
        from warmup_lab.errors import RunTakenOver

        now = self._holder()
        if now != self.token:
            what = "was removed" if not self.run_dir.is_dir() else f"lost its {LOCK_FILE}"
            taken = ", and another process now owns it" if now else ""
            raise RunTakenOver(f"{self.run_dir} {what} while this run was writing there{taken}; this process stopped "
                               "without writing more (run the command again, once, to continue from the last checkpoint)")

    def explain(self) -> None:
        """Raise RunTakenOver in place of a failed write's error when the directory stopped being ours.

        A check and the write after it are not one atomic step: a directory removed in between makes
        the write fail (a missing file or folder), and that failure means "taken over", not a disk fault.
        """
        from warmup_lab.errors import RunTakenOver

        try:
            self.check()
        except RunTakenOver as taken:
            raise taken from None  # the write's error was a symptom, not news


@contextlib.contextmanager
def owned(run_dir: Path) -> Iterator[Owner]:
    """Hold `run_dir`'s exclusive lock for the block; a second process on the same directory waits.

    flock locks die with their process (no stale lock after a kill), and whoever gets the lock next
    reads the directory afresh: it skips a run the first process finished, or resumes it.
    """
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"wait: {run_dir} is being written by another process; waiting for it to finish", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        token = f"{os.getpid()} {os.urandom(8).hex()}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, token.encode(), 0)
        yield Owner(run_dir, token)
    finally:
        os.close(fd)  # releases the lock


def find_run_dirs(roots: Iterable[Path]) -> list[Path]:
    """Every directory under `roots` that holds a summary file (or is a run dir with a config)."""
    found: set[Path] = set()
    for root in roots:
        root = Path(root)
        for marker in (SUMMARY_FILE, CONFIG_FILE):
            for p in root.rglob(marker):
                if p.parent.name != ".hydra":
                    found.add(p.parent)
    return sorted(found)
