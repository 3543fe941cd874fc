"""`python -m warmup_lab.train <overrides>`: one training run as a Hydra job.

Inside a multirun (any launcher) each job is one run; a job whose run already finished is skipped,
which is what makes a re-run of a sweep resume it (DESIGN.md section 7).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from warmup_lab import runs  # noqa: F401 - registers the ${hash:} resolver used by conf/train.yaml
from warmup_lab.cli import check_argv
from warmup_lab.errors import exit_on_user_error
from warmup_lab.paths import CONF_DIR


def _run_dir(cfg: DictConfig) -> Path:
    if cfg.get("out"):
        return Path(str(cfg.out))
    return Path(HydraConfig.get().runtime.output_dir)


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    from warmup_lab.trainer import train

    summary = train(cfg, _run_dir(cfg))
    print(
        f"{summary['status']}: steps_run={summary['steps_run']} final_train_loss={summary.get('final_train_loss')}"
        f" final_eval_acc={summary.get('final_eval_acc')} -> {summary.get('run_dir', _run_dir(cfg))}",
        flush=True,
    )
    loss = summary.get("final_train_loss")
    return float(loss) if isinstance(loss, (int, float)) else float("nan")


if __name__ == "__main__":
    check_argv()  # one line for an unknown group option, before Hydra's multi-line one
    main()
