"""The `warmup-lab` command (one subcommand per entry module), and the checks that run before Hydra.

`warmup-lab <command> ...` sets sys.argv to `["warmup-lab <command>", *rest]` and calls that module's
`main()`, so each subcommand parses its own arguments exactly as `python -m warmup_lab.<module>` does.

Hydra answers an unknown config-group option (`schedule=nope`) with a multi-line dump of its search
path; a researcher needs one line that names the value and the options. Group choices in the command
line are checked against the files in conf/ here, and so are a stray word that is not an override
(Hydra's answer is a traceback) and `-m` with a fixed `out=` (every job of a multirun would share one
directory); everything else is left to Hydra and the config validation of each component.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from warmup_lab.errors import ConfigError, exit_on_user_error
from warmup_lab.paths import CONF_DIR


def _options(group: Path) -> list[str]:
    return sorted(str(p.relative_to(group).with_suffix("")) for p in group.rglob("*.yaml")
                  if not p.name.startswith("_"))


def check_group_choices(argv: Sequence[str], conf_dir: Path = CONF_DIR) -> None:
    """Raise ConfigError for `group=option` where conf/<group>/ exists but has no <option>.yaml."""
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        group = conf_dir / key
        if key.startswith("hydra") or not group.is_dir() or "(" in value or "$" in value:
            continue  # plugin groups (launchers, sweepers) and sweep functions are Hydra's to check
        for option in filter(None, value.split(",")):
            if option != "null" and not (group / f"{option}.yaml").exists():
                raise ConfigError(key, option, f"one of {', '.join(_options(group))} (files in warmup_lab/conf/{key}/)")


def check_override_form(overrides: Sequence[str]) -> None:
    """Raise ConfigError for an override without `=` (Hydra's grammar allows only `~key` so): a stray word,
    often an option's value split in two, that Hydra would answer with a traceback."""
    for arg in overrides:
        if "=" not in arg and not arg.startswith("~"):
            raise ConfigError("override", arg, "not KEY=VALUE (a stray word? an option's value is one word: "
                              "--budget 10runs, not --budget 10 runs)")


def hydra_overrides(argv: Sequence[str]) -> list[str]:
    """The overrides in a Hydra app's command line, found by Hydra's own parser (`--cfg job`'s `job` is not
    one); none where a flag is wrong, which Hydra then reports itself."""
    import argparse

    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.exit_on_error = False
    try:
        known, rest = parser.parse_known_args(list(argv))
    except argparse.ArgumentError:
        return []
    return [*known.overrides, *(a for a in rest if not a.startswith("-"))]  # words after a flag land in rest


def check_multirun_out(argv: Sequence[str]) -> None:
    """Raise ConfigError for `-m`/`--multirun` together with a non-null `out=`."""
    if not {"-m", "--multirun"} & set(argv):
        return
    for arg in argv:
        if arg.lstrip("+").startswith("out=") and arg.split("=", 1)[1] not in ("", "null"):
            raise ConfigError("out", arg.split("=", 1)[1],
                              "a multirun gives each job its own directory under runs_root: drop out= (set runs_root=)")


def check_quoting(argv: Sequence[str]) -> None:
    """Raise ConfigError for a non-ASCII value outside quotes (Hydra's lexer error does not say to quote it)."""
    for arg in argv:
        key, _, value = arg.partition("=")
        if value and not arg.startswith("-") and not value.isascii() and value[0] not in "'\"":
            raise ConfigError(key.lstrip("+~"), value, f"Hydra reads non-ASCII characters only inside quotes: "
                              f"write {key}='\"{value}\"' (Hydra's double quotes inside the shell's single quotes)")


@exit_on_user_error
def check_argv() -> None:
    from warmup_lab.lifecycle import check_open_files

    check_override_form(hydra_overrides(sys.argv[1:]))
    check_group_choices(sys.argv[1:])
    check_multirun_out(sys.argv[1:])
    check_quoting(sys.argv[1:])
    check_open_files(sys.argv[1:])


class Command(NamedTuple):
    target: str  # "module:function", imported only when the command runs (keeps `--help` fast)
    summary: str
    prefix: tuple[str, ...] = ()  # arguments put before the user's (search = a train multirun)
    hydra: bool = False  # a Hydra app: check group choices first (one line instead of Hydra's dump)


COMMANDS = {
    "train": Command("warmup_lab.cli:train_main", "one run (Hydra overrides), or `-m` for a grid multirun"),
    "sweep": Command("warmup_lab.sweep:main", "an experiment preset as a sweep into sweeps/<name>/, then its report"),
    "search": Command("warmup_lab.cli:train_main", "maximum-stable-LR search over seeds (hydra/sweeper=max_stable_lr)",
                      ("-m", "hydra/sweeper=max_stable_lr")),
    "report": Command("warmup_lab.report:main", "tables and figures from run directories into results/"),
    "lr-curve": Command("warmup_lab.lr_curve:main", "the LR of every step of a schedule, as CSV and PNG",
                        hydra=True),
    "lr-find": Command("warmup_lab.lr_find:main", "the LR range test (exponential ramp) on any task"),
    "advise": Command("warmup_lab.advise:main", "recommend a warmup length and peak LR for your task and model"),
}


def train_main() -> object:
    """`python -m warmup_lab.train`'s entry: stop with a launcher that started us, checks, then Hydra."""
    from warmup_lab import train
    from warmup_lab.lifecycle import LAUNCHER_PID_ENV, stop_with_launcher

    stop_with_launcher()
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())  # the workers of our launcher stop with us
    check_argv()
    return train.main()


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items()]
    return ("usage: warmup-lab <command> [args...]   (`warmup-lab <command> --help` for its own)\n\ncommands:\n"
            + "\n".join(lines) + "\n")


def _load(target: str) -> Callable[[], object]:
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def main(argv: Sequence[str] | None = None) -> int:
    """Console script `warmup-lab`: dispatch to the subcommand's module."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage(), end="")
        return 0 if args else 2
    if args[0] == "--version":
        from warmup_lab import __version__

        print(f"warmup-lab {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"error: {ConfigError('command', name, 'one of ' + ', '.join(COMMANDS))}", file=sys.stderr)
        return 2
    cmd = COMMANDS[name]
    given = {a.split("=", 1)[0] for a in rest} | ({"-m"} if "--multirun" in rest else set())
    prefix = [a for a in cmd.prefix if a.split("=", 1)[0] not in given]  # what the user gave wins
    sys.argv = [f"warmup-lab {name}", *prefix, *rest]
    if cmd.hydra:
        check_argv()
    try:
        entry = _load(cmd.target)
    except ModuleNotFoundError as err:
        if not cmd.target.startswith(f"{err.name}:"):
            raise
        print(f"error: command={name!r} is not in this install ({err.name} is missing): reinstall warmup-lab",
              file=sys.stderr)
        return 2
    code = entry()
    return code if isinstance(code, int) else 0
