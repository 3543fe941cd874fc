"""An independent recomputation of every committed interval, p-value and verdict under results/.

Nothing here imports warmup_lab.stability: the statistics below are written again from
docs/definitions.md (#eta-max, #aggregate, #comparison, #declared) with math/itertools/numpy only, and
run on the committed files themselves:

- eta_max_summary.csv   <- eta_max.csv (per-seed eta_max): n_seeds, censoring counts, censored_seeds,
                           n_probes, the median on log-LR, its exact order-statistic interval and coverage;
- eta_max_compare.csv   <- eta_max.csv: n_seeds, paired, the Hodges-Lehmann ratio, its exact interval and
                           coverage, the test, n_undetermined, the exact p, Holm's p, the verdict;
- final_loss_compare.csv <- runs.csv (final_train_loss per run): the same columns, per target LR;
- threshold_sweep.csv   <- runs.csv (loss_frac_<f> judged again from final loss and l0): the same columns;
- eta_max.csv           <- runs.csv, or a search's search.json (its probes): each criterion judged again
                           from status, final train loss, l0 and baseline_loss, the eta_max rule applied again;
- p_stable.csv          <- the same probes (n, n_stable) and its own n, n_stable: p_stable, Wilson interval;
- mechanisms/warmup.csv, mechanisms/catapult_boundaries_summary.csv <- their per-seed files: median and range.

Two readings the definitions leave open, taken as the files take them: values equal up to float rounding
are ties (log(2.26) - log(1.6) and log(1.13) - log(0.8) are one ratio of the LR grid), and a seed with no
stable LR counts every LR it probed in n_unstable_below (non_monotone stays False).

What cannot be recomputed from the committed files, and so is taken from the row as an input:
- `declared` (the preset's YAML decides it, not a number), `one_arm` (needs the full per-step LR curves;
  curves.csv.gz is thinned and rounded to 6 digits), `reused_seeds` (needs the source runs of
  `selected_from`); the verdict is recomputed from them and from the recomputed p's.
- the LR50 columns of eta_max_summary.csv: a Firth fit with a profile-likelihood scan, not an exact
  statistic (its digits depend on the scan and the bisection), so they are not checked here.

Numbers written by the harness are rounded to 10 significant digits (ratios, LRs) or 6 (coverage), so
values are compared at a relative tolerance of 1e-9 (coverage 1e-6); p-values are exact fractions.
"""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"

# the constants of docs/definitions.md
CI_LEVEL = 0.9
ALPHA = 0.05
MIN_SEEDS = 3
TIE = 1e-9  # a censored bound sorts just beyond an exact value at the same log value
TIE_EPS = 1e-12  # values this close (relative) are one value written twice by float rounding
REL = 1e-9
COV_TOL = 1e-6
FLAG = {"": 0, "below": -1, "above": 1, "undetermined": 2}
TEXT = {v: k for k, v in FLAG.items()}
STATS_START = "criterion"  # the setting keys are the columns before it (and before `lr` / `threshold`)


def files(name: str) -> list[Path]:
    return sorted(RESULTS.rglob(name))


def rel(p: Path) -> str:
    return str(p.relative_to(RESULTS))


def read(p: Path) -> pd.DataFrame:
    return pd.read_csv(p, dtype=str, keep_default_na=False)


def num(x: str) -> float:
    return float("nan") if x in ("", "nan", "NaN") else float(x)


def setting_cols(df: pd.DataFrame, extra=("lr", "threshold")) -> list[str]:
    cols = list(df.columns[: list(df.columns).index(STATS_START)])
    return [c for c in cols if c not in extra]


# ---------------------------------------------------------------------------------------------------
# flagged values: 0 exact, -1 an upper bound ("<"), +1 a lower bound (">="), 2 undetermined

def sum_flag(f1: int, f2: int) -> int:
    if f1 == 2 or f2 == 2:
        return 2
    if f1 == 0:
        return f2
    if f2 == 0 or f1 == f2:
        return f1
    return 2


def neg(f: int) -> int:
    return -f if f in (-1, 1) else f


def key(v: float, f: int) -> float:
    return v + TIE * f if f in (-1, 1) else v


def plain_median(items: list[tuple[float, int]]) -> tuple[float, int]:
    m = len(items)
    if m % 2:
        return items[m // 2]
    (v1, f1), (v2, f2) = items[m // 2 - 1], items[m // 2]
    return (v1 + v2) / 2, sum_flag(f1, f2)


def fmedian(vals, flags) -> tuple[float, int]:
    """Median of flagged values; undetermined members are tried at both ends: if it moves, undetermined."""
    det = sorted(((v, f) for v, f in zip(vals, flags) if f != 2), key=lambda t: key(*t))
    u = sum(1 for f in flags if f == 2)
    if not det:
        return float("nan"), 2
    if u == 0:
        return plain_median(det)
    und = [(float("nan"), 2)] * u
    lo, hi = plain_median(und + det), plain_median(det + und)
    if lo[1] == 2 or hi[1] == 2 or lo != hi:
        return float("nan"), 2
    return lo


def kth(vals, flags, k: int, low: bool) -> tuple[float, int]:
    """k-th smallest (low) or largest value; an undetermined one sorts at -inf (low) / +inf (high)."""
    inf = -math.inf if low else math.inf
    items = sorted(((inf, 2) if f == 2 else (v, f) for v, f in zip(vals, flags)),
                   key=lambda t: t[0] if t[1] == 2 else key(*t), reverse=not low)
    v, f = items[k - 1]
    return (float("nan"), 2) if f == 2 else (v, f)


# ---------------------------------------------------------------------------------------------------
# exact null distributions (integer counts) and tests

def subset_sum_counts(scores: list[int], size: int | None = None) -> dict[int, int]:
    """Number of subsets of `scores` with each total: of exactly `size` elements, or any size."""
    if size is None:
        dist = {0: 1}
        for s in scores:
            new = dict(dist)
            for t, c in dist.items():
                new[t + s] = new.get(t + s, 0) + c
            dist = new
        return dist
    table = [dict() for _ in range(size + 1)]
    table[0][0] = 1
    for s in scores:
        for j in range(min(size, len(scores)), 0, -1):
            for t, c in table[j - 1].items():
                table[j][t + s] = table[j][t + s] + c if t + s in table[j] else c
    return table[size]


def cdf_from_counts(counts: dict[int, int], upto: int) -> list[Fraction]:
    total = sum(counts.values())
    out, acc = [], 0
    for j in range(upto + 1):
        acc += counts.get(j, 0)
        out.append(Fraction(acc, total))
    return out


def order_rank(cdf: list[Fraction], level: float = CI_LEVEL) -> tuple[int, float]:
    """Largest k with coverage 1 - 2 P(S <= k-1) >= level, else k = 1 with its (lower) coverage."""
    k = 1
    while k < len(cdf) and 1 - 2 * cdf[k] >= level:
        k += 1
    return k, float(1 - 2 * cdf[k - 1])


def median_rank(n: int) -> tuple[int, float]:
    counts = {j: math.comb(n, j) for j in range(n + 1)}  # seeds below the median: Binomial(n, 1/2)
    return order_rank(cdf_from_counts(counts, (n + 1) // 2))


def signed_rank_k(n: int) -> tuple[int, float]:
    m = n * (n + 1) // 2
    return order_rank(cdf_from_counts(subset_sum_counts(list(range(1, n + 1))), (m + 1) // 2))


def rank_sum_k(na: int, nb: int) -> tuple[int, float]:
    counts = subset_sum_counts(list(range(1, na + nb + 1)), nb)
    off = nb * (nb + 1) // 2  # U = rank sum - its minimum
    u = {s - off: c for s, c in counts.items()}
    return order_rank(cdf_from_counts(u, (na * nb + 1) // 2))


def same(x: float, y: float) -> bool:
    """A tie: equal up to float rounding (log(2.26) - log(1.6) and log(1.13) - log(0.8) are one ratio).
    Far below TIE, so a censored bound nudged beyond an exact value never ties with it."""
    return abs(x - y) <= TIE_EPS * max(1.0, abs(x), abs(y))


def doubled_midranks(keys: list[float]) -> list[int]:
    """2 x the midrank of each key (ties share the mean of their ranks): integers, so counts stay exact."""
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    ranks = [0] * len(keys)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and same(keys[order[j + 1]], keys[order[i]]):
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + 1) + (j + 1)  # 2 x the mean of ranks i+1..j+1
        i = j + 1
    return ranks


def signed_rank_p(d: list[float]) -> float:
    d = [x for x in d if x != 0]
    if not d:
        return 1.0
    r = doubled_midranks([abs(x) for x in d])
    total = sum(r)
    w = sum(ri for ri, x in zip(r, d) if x > 0)
    dist = subset_sum_counts(r)
    far = sum(c for s, c in dist.items() if abs(2 * s - total) >= abs(2 * w - total))
    return float(Fraction(far, 2 ** len(d)))


def sign_test_p(signs: list[int]) -> float:
    s = [x for x in signs if x != 0]
    m, k = len(s), sum(1 for x in s if x > 0)
    if m == 0:
        return 1.0
    far = sum(math.comb(m, j) for j in range(m + 1) if abs(2 * j - m) >= abs(2 * k - m))
    return float(Fraction(far, 2 ** m))


def rank_sum_p(a_keys: list[float], b_keys: list[float]) -> float:
    r = doubled_midranks(a_keys + b_keys)
    n, nb = len(r), len(b_keys)
    total, rb = sum(r), sum(r[len(a_keys):])
    dist = subset_sum_counts(r, nb)
    far = sum(c for s, c in dist.items() if abs(n * s - nb * total) >= abs(n * rb - nb * total))
    return float(Fraction(far, math.comb(n, nb)))


def holm(ps: list[float]) -> list[float]:
    idx = [i for i, p in enumerate(ps) if not math.isnan(p)]
    out = [float("nan")] * len(ps)
    m, run = len(idx), 0.0
    for j, i in enumerate(sorted(idx, key=lambda i: ps[i])):
        run = max(run, min(1.0, (m - j) * ps[i]))
        out[i] = run
    return out


def wilson(k: int, n: int, level: float = CI_LEVEL) -> tuple[float, float]:
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# ---------------------------------------------------------------------------------------------------
# the statistics of one setting and of one pair

def summary_of(vals: list[float], flags: list[int]) -> dict:
    n = len(vals)
    k, cov = median_rank(n)
    est = fmedian(vals, flags)
    lo, hi = kth(vals, flags, k, True), kth(vals, flags, k, False)
    return {"estimate": est, "ci_low": lo, "ci_high": hi, "ci_coverage": cov}


def shift(a: dict[str, tuple[float, int]], b: dict[str, tuple[float, int]]) -> dict:
    """log b - log a over seeds (a, b: seed -> (log value, flag)): HL estimate, exact interval, exact p.

    The sign of a censored difference is known where the bound points away from the other side (d > 0
    flagged ">=", d < 0 flagged "<"), and at d = 0 where exactly one side is "below": nothing was stable at
    that LR, so it lies strictly under an exact value or a ">=" there. Otherwise (both bounds the same way,
    or ">=" beside an exact value at the same LR, which may be a tie) it is unknown and left out
    (docs/definitions.md#comparison)."""
    if set(a) == set(b):
        seeds = sorted(a)
        d = [b[s][0] - a[s][0] for s in seeds]
        fd = [sum_flag(b[s][1], neg(a[s][1])) for s in seeds]
        n = len(d)
        walsh, fw = [], []
        for i in range(n):
            for j in range(i, n):
                walsh.append((d[i] + d[j]) / 2)
                fw.append(sum_flag(fd[i], fd[j]))
        k, cov = signed_rank_k(n)
        signs = []
        for s, x, f in zip(seeds, d, fd):
            fa, fb = a[s][1], b[s][1]
            if f == 0:
                signs.append((x > 0) - (x < 0))
            elif x == 0:
                signs.append(1 if fa == -1 and fb != -1 else -1 if fb == -1 and fa != -1 else None)
            elif f == 1 and x > 0:
                signs.append(1)
            elif f == -1 and x < 0:
                signs.append(-1)
            else:
                signs.append(None)
        known = [i for i, s in enumerate(signs) if s is not None]
        if any(fd[i] != 0 for i in known):
            test, p = "sign test (paired; censored differences)", sign_test_p([signs[i] for i in known])
        else:
            test, p = "Wilcoxon signed-rank (paired)", signed_rank_p([d[i] for i in known])
        return {"paired": True, "est": fmedian(walsh, fw), "low": kth(walsh, fw, k, True),
                "high": kth(walsh, fw, k, False), "cov": cov, "test": test, "p": p,
                "n_undetermined": n - len(known)}
    diffs, fdiff = [], []
    for vb, fb in b.values():
        for va, fa in a.values():
            diffs.append(vb - va)
            fdiff.append(sum_flag(fb, neg(fa)))
    k, cov = rank_sum_k(len(a), len(b))
    p = rank_sum_p([key(*t) for t in a.values()], [key(*t) for t in b.values()])
    return {"paired": False, "est": fmedian(diffs, fdiff), "low": kth(diffs, fdiff, k, True),
            "high": kth(diffs, fdiff, k, False), "cov": cov, "test": "Mann-Whitney", "p": p,
            "n_undetermined": 0}


# ---------------------------------------------------------------------------------------------------
# assertions, collecting every mismatch of a file before failing

class Checker:
    def __init__(self, name: str):
        self.name, self.errors, self.cells = name, [], 0

    def _err(self, where, col, committed, mine):
        self.errors.append(f"{self.name} {where} {col}: committed {committed!r}, recomputed {mine!r}")

    def value(self, where, col, committed: str, mine: float, tol=REL, absolute=False):
        self.cells += 1
        c = num(committed)
        if math.isnan(mine) and math.isnan(c):
            return
        ok = (not math.isnan(mine) and not math.isnan(c)
              and (abs(c - mine) <= tol if absolute else math.isclose(c, mine, rel_tol=tol, abs_tol=1e-300)))
        if not ok:
            self._err(where, col, committed, mine)

    def lr(self, where, col, committed: str, logv: float):
        self.value(where, col, committed, math.exp(logv) if not math.isnan(logv) else float("nan"))

    def equal(self, where, col, committed, mine):
        self.cells += 1
        if str(committed) != str(mine):
            self._err(where, col, committed, mine)

    def flagged(self, where, col, row, vf, flag_col):
        self.lr(where, col, row[col], vf[0])
        self.equal(where, flag_col, row[flag_col], TEXT[vf[1]])

    def done(self, min_rows: int = 1):
        assert not self.errors, f"{len(self.errors)} mismatches:\n" + "\n".join(self.errors[:60])
        assert self.cells >= min_rows


def bool_text(b: bool) -> str:
    return "True" if b else "False"


def parse_baseline(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in re.split(r", (?=[\w.\-]+=)", text))


def arm_of(setting: dict[str, str], varied: dict[str, str]) -> tuple:
    """An arm: the setting keys other than warmup and its length (and a search's setting index), and other
    than the keys a declared pair varies (`varied`: those its baseline names, e.g. norm for Post- vs Pre-LN)."""
    return tuple((k, v) for k, v in sorted(setting.items())
                 if k not in ("warmup", "warmup_steps", "setting") and "warmup" not in k and k not in varied)


def verdict_of(r: dict, ph: float) -> str:
    if r["one_arm"]:
        return "one arm"
    if r["few"]:
        return "too few seeds"
    if not r["declared"]:
        return "exploratory"
    if r["reused"]:
        return "seeds reused"
    return "resolved" if ph <= ALPHA else "not resolved"


def check_compare(chk: Checker, cmp: pd.DataFrame, per_seed, group_cols: list[str]) -> None:
    """Recompute every comparison row. per_seed(setting dict, group dict) -> {seed: (log value, flag)}."""
    keys = setting_cols(cmp)
    rows = []
    for i, row in cmp.iterrows():
        line = i + 2  # the line of the file
        where = f"row {line}"
        b_set = {k: row[k] for k in keys}
        a_set = {**b_set, **parse_baseline(row["baseline"])}
        group = {c: row[c] for c in group_cols}
        b, a = per_seed(b_set, group), per_seed(a_set, group)
        assert a and b, f"{chk.name} {where}: no per-seed values for {a_set if not a else b_set} {group}"
        r = shift(a, b)
        chk.equal(where, "n_seeds", row["n_seeds"], len(b))
        chk.equal(where, "n_seeds_baseline", row["n_seeds_baseline"], len(a))
        if "paired" in row:
            chk.equal(where, "paired", row["paired"], bool_text(r["paired"]))
        if "n_undetermined" in row:
            chk.equal(where, "n_undetermined", row["n_undetermined"], r["n_undetermined"])
        chk.flagged(where, "ratio", row, r["est"], "ratio_censored")
        chk.flagged(where, "ci_low", row, r["low"], "ci_low_censored")
        chk.flagged(where, "ci_high", row, r["high"], "ci_high_censored")
        chk.value(where, "ci_coverage", row["ci_coverage"], r["cov"], COV_TOL, absolute=True)
        chk.value(where, "ci_level", row["ci_level"], CI_LEVEL)
        if r["paired"]:
            chk.equal(where, "test", row["test"], r["test"])
        else:
            chk.equal(where, "test contains", "Mann-Whitney" in row["test"], True)
        one_arm = row.get("one_arm", "False") == "True"  # an input: needs the full LR curves
        declared = row["declared"] == "True"             # an input: the preset's YAML
        reused = row.get("reused_seeds", "") not in ("", "[]")  # an input: needs the source runs
        few = len(a) < MIN_SEEDS or len(b) < MIN_SEEDS
        nan = float("nan")
        p = nan if one_arm else r["p"]
        chk.value(where, "p_value", row["p_value"], p)
        rows.append(dict(i=i, where=where, arm=arm_of(b_set, parse_baseline(row["baseline"])), group=tuple(group.items()),
                         crit=row["criterion"], p=p, one_arm=one_arm, declared=declared,
                         reused=reused, few=few, in_family=declared and not one_arm and not math.isnan(p)))
    # Holm over each family: the declared, tested comparisons of one arm under one criterion (and group)
    fams: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["in_family"]:
            fams.setdefault((r["arm"], r["crit"], r["group"]), []).append(r)
    for fam in fams.values():
        for r, ph in zip(fam, holm([r["p"] for r in fam])):
            r["p_holm"] = ph
    for r in rows:
        row = cmp.loc[r["i"]]
        ph = r.get("p_holm", float("nan"))
        chk.value(r["where"], "p_holm", row["p_holm"], ph)
        verdict = verdict_of(r, ph)
        chk.equal(r["where"], "verdict", row["verdict"], verdict)
        if "resolved" in row:
            chk.equal(r["where"], "resolved", row["resolved"], bool_text(verdict == "resolved"))


# ---------------------------------------------------------------------------------------------------
# per-seed values from eta_max.csv

def eta_values(eta: pd.DataFrame) -> dict[tuple, dict[str, tuple[float, int]]]:
    """(setting items, criterion) -> {seed: (log eta_max, flag)}; a censored seed enters at its bound."""
    keys = setting_cols(eta)
    out: dict[tuple, dict[str, tuple[float, int]]] = {}
    for _, row in eta.iterrows():
        f = FLAG[row["censored"]]
        v = num(row["hi"]) if f == -1 else num(row["lo"]) if f == 1 else num(row["eta_max"])
        if f == 1:
            assert num(row["eta_max"]) == v
        out.setdefault((tuple((k, row[k]) for k in keys), row["criterion"]), {})[row["seed"]] = (math.log(v), f)
    return out


def partner(path: Path, name: str) -> Path:
    p = path.with_name(name)
    if not p.exists():
        pytest.skip(f"no {name} beside {rel(path)}")
    return p


@pytest.mark.parametrize("path", files("eta_max_summary.csv"), ids=rel)
def test_eta_max_summary(path: Path) -> None:
    summ, eta = read(path), read(partner(path, "eta_max.csv"))
    values = eta_values(eta)
    keys = setting_cols(summ)
    assert keys == setting_cols(eta)
    chk = Checker(rel(path))
    probes = eta.assign(n=eta["n_probes"].astype(int)).groupby(keys + ["criterion"])["n"].sum()
    for i, row in summ.iterrows():
        where = f"row {i + 2}"
        seeds = values[(tuple((k, row[k]) for k in keys), row["criterion"])]
        order = sorted(seeds, key=int)
        vals, flags = [seeds[s][0] for s in order], [seeds[s][1] for s in order]
        s = summary_of(vals, flags)
        chk.equal(where, "n_seeds", row["n_seeds"], len(vals))
        chk.equal(where, "n_censored_below", row["n_censored_below"], flags.count(-1))
        chk.equal(where, "n_censored_above", row["n_censored_above"], flags.count(1))
        chk.equal(where, "censored_seeds", row["censored_seeds"],
                  " ".join(f"{sd}:{TEXT[seeds[sd][1]]}" for sd in order if seeds[sd][1]))
        chk.equal(where, "n_probes", row["n_probes"], probes[tuple(row[k] for k in keys + ["criterion"])])
        chk.flagged(where, "estimate", row, s["estimate"], "estimate_censored")
        chk.flagged(where, "ci_low", row, s["ci_low"], "ci_low_censored")
        chk.flagged(where, "ci_high", row, s["ci_high"], "ci_high_censored")
        chk.value(where, "ci_coverage", row["ci_coverage"], s["ci_coverage"], COV_TOL, absolute=True)
        chk.value(where, "ci_level", row["ci_level"], CI_LEVEL)
        chk.equal(where, "interval", row["interval"], "exact order-statistic")
        # lr50, lr50_low, lr50_high and their flags: a Firth fit and a profile scan, not recomputed here
    chk.done(len(summ))


@pytest.mark.parametrize("path", files("eta_max_compare.csv"), ids=rel)
def test_eta_max_compare(path: Path) -> None:
    cmp, eta = read(path), read(partner(path, "eta_max.csv"))
    values = eta_values(eta)

    def per_seed(setting, group):
        return values.get((tuple(setting.items()), group["criterion"]), {})

    chk = Checker(rel(path))
    check_compare(chk, cmp, per_seed, ["criterion"])
    chk.done(len(cmp))


# ---------------------------------------------------------------------------------------------------
# runs.csv: the final training loss per run, and each criterion judged again

def load_runs(path: Path) -> pd.DataFrame:
    runs = pd.read_csv(path, dtype=str, keep_default_na=False)
    for c in ("final_train_loss", "init_loss", "target_lr", "task_info.baseline_loss"):
        if c in runs:
            runs[c] = runs[c].map(num)
    return runs


def load_probes(path: Path, table: pd.DataFrame) -> pd.DataFrame | None:
    """Every probe beside a table: runs.csv (a sweep's report) or search.json (a search's probes, their
    setting keys taken from `table` by the setting index); None where neither is committed."""
    if path.with_name("runs.csv").exists():
        return load_runs(path.with_name("runs.csv"))
    if not path.with_name("search.json").exists():
        return None
    search = json.loads(path.with_name("search.json").read_text())
    keys = setting_cols(table)
    by_index = {r["setting"]: {k: r[k] for k in keys} for _, r in table.iterrows()}
    rows = []
    for s in search["settings"]:
        for sd in s["seeds"]:
            assert not sd.get("errors_as_unstable"), "a probe that errored: not recomputed here"
            for pr in sd["probes"]:
                rows.append({**by_index[str(s["setting"])], "seed": str(sd["seed"]), "target_lr": float(pr["lr"]),
                             "status": pr["status"], "final_train_loss": num(str(pr["final_train_loss"])),
                             "init_loss": float(pr["init_loss"]), "task_info.baseline_loss": num(str(pr["baseline_loss"]))})
    return pd.DataFrame(rows)


def runs_of(runs: pd.DataFrame, setting: dict[str, str]) -> pd.DataFrame:
    sel = np.ones(len(runs), bool)
    for k, v in setting.items():
        if k not in runs:
            return runs.iloc[0:0]
        sel &= (runs[k] == v).to_numpy()
    return runs[sel]


@pytest.mark.parametrize("path", files("final_loss_compare.csv"), ids=rel)
def test_final_loss_compare(path: Path) -> None:
    cmp, runs = read(path), load_runs(partner(path, "runs.csv"))
    loss = runs["final_train_loss"]
    finite = np.isfinite(loss) & (runs["status"] != "diverged")
    # a run without a finite final loss, or a diverged one: ">=" the largest finite loss at its LR
    top = runs[finite].groupby("target_lr")["final_train_loss"].max()

    def per_seed(setting, group):
        lr = float(group["lr"])
        sub = runs_of(runs, setting)
        sub = sub[sub["target_lr"] == lr]
        out = {}
        for idx, r in sub.iterrows():
            ok = finite[idx]
            assert r["seed"] not in out, "one run per seed and LR"
            out[r["seed"]] = (math.log(r["final_train_loss"]), 0) if ok else (math.log(top[lr]), 1)
        return out

    chk = Checker(rel(path))
    check_compare(chk, cmp, per_seed, ["criterion", "lr"])
    chk.done(len(cmp))


def judge(runs: pd.DataFrame, crit: str) -> np.ndarray:
    plain = (runs["status"] == "completed").to_numpy()
    loss, l0 = runs["final_train_loss"].to_numpy(), runs["init_loss"].to_numpy()
    if crit == "plain":
        return plain
    if crit == "not_diverged":
        return (runs["status"] != "diverged").to_numpy()
    m = re.fullmatch(r"(learned|loss_frac)_([0-9.]+)", crit)
    assert m, f"criterion {crit} not recomputed here"
    f = float(m.group(2))
    if m.group(1) == "loss_frac":
        return plain & (loss <= f * l0)
    base = runs["task_info.baseline_loss"].to_numpy() if "task_info.baseline_loss" in runs else np.full(len(runs), np.nan)
    bar = np.where(np.isfinite(base), base, l0)
    return plain & (loss <= f * bar)


def eta_rule(lrs: np.ndarray, stable: np.ndarray) -> dict:
    """The largest stable LR below the first unstable LR above the smallest stable one."""
    grid = sorted(set(lrs.tolist()))
    ok = [bool(stable[lrs == x].all()) for x in grid]
    if not any(ok):  # every LR probed is unstable, and (as the files count them) below every stable one
        return dict(eta_max=float("nan"), lo=float("nan"), hi=grid[0], censored="below",
                    n_unstable_below=len(grid), non_monotone=False)
    s0 = ok.index(True)
    below = s0  # every LR below the smallest stable one is unstable
    first_bad = next((i for i in range(s0, len(grid)) if not ok[i]), None)
    if first_bad is None:
        return dict(eta_max=grid[-1], lo=grid[-1], hi=float("nan"), censored="above",
                    n_unstable_below=below, non_monotone=below > 0)
    eta = grid[first_bad - 1]
    above = any(ok[i] for i in range(first_bad + 1, len(grid)))
    return dict(eta_max=eta, lo=eta, hi=grid[first_bad], censored="", n_unstable_below=below,
                non_monotone=above or below > 0)


def per_seed_eta(runs: pd.DataFrame, keys: list[str], crit: str) -> dict[tuple, dict]:
    stable = judge(runs, crit)
    out = {}
    for (vals), idx in runs.groupby(keys + ["seed"]).groups.items():
        pos = runs.index.get_indexer(idx)
        out[tuple(vals)] = {**eta_rule(runs["target_lr"].to_numpy()[pos], stable[pos]), "n_probes": len(pos)}
    return out


@pytest.mark.parametrize("path", files("eta_max.csv"), ids=rel)
def test_eta_max_from_runs(path: Path) -> None:
    eta = read(path)
    runs = load_probes(path, eta)
    if runs is None:
        pytest.skip(f"no runs.csv or search.json beside {rel(path)}")
    keys = setting_cols(eta)
    chk = Checker(rel(path))
    cache: dict[str, dict] = {}
    for i, row in eta.iterrows():
        where = f"row {i + 2}"
        crit = row["criterion"]
        if crit not in cache:
            cache[crit] = per_seed_eta(runs, keys, crit)
        mine = cache[crit].get(tuple(row[k] for k in keys) + (row["seed"],))
        assert mine is not None, f"{chk.name} {where}: no runs for this setting and seed"
        for col in ("eta_max", "lo", "hi"):
            chk.value(where, col, row[col], mine[col])
        for col in ("censored", "n_probes", "n_unstable_below"):
            chk.equal(where, col, row[col], mine[col])
        chk.equal(where, "non_monotone", row["non_monotone"], bool_text(mine["non_monotone"]))
    # every (setting, criterion, seed) of the runs is in the file
    for crit, d in cache.items():
        assert len(eta[eta["criterion"] == crit]) == len(d), f"{chk.name}: {crit} rows != setting x seed in runs.csv"
    chk.done(len(eta))


@pytest.mark.parametrize("path", files("threshold_sweep.csv"), ids=rel)
def test_threshold_sweep(path: Path) -> None:
    sweep, runs = read(path), load_runs(partner(path, "runs.csv"))
    keys = setting_cols(sweep)
    cache: dict[str, dict] = {}

    def per_seed(setting, group):
        crit = group["criterion"]
        assert crit == f"loss_frac_{group['threshold']}" or float(crit.split("_")[-1]) == float(group["threshold"])
        if crit not in cache:
            cache[crit] = per_seed_eta(runs, keys, crit)
        out = {}
        for k, r in cache[crit].items():
            if dict(zip(keys, k[:-1])) == setting:
                f = FLAG[r["censored"]]
                v = r["hi"] if f == -1 else r["eta_max"]
                out[k[-1]] = (math.log(v), f)
        return out

    chk = Checker(rel(path))
    check_compare(chk, sweep, per_seed, ["criterion", "threshold"])
    chk.done(len(sweep))


# ---------------------------------------------------------------------------------------------------
# P(stable | LR) and its Wilson interval; the mechanisms' medians and ranges

@pytest.mark.parametrize("path", files("p_stable.csv"), ids=rel)
def test_p_stable_wilson(path: Path) -> None:
    """p_stable = n_stable / n and its Wilson interval (older search files carry no interval); where the
    folder holds runs.csv, n and n_stable too, from every probe judged again."""
    ps = read(path)
    chk = Checker(rel(path))
    counts = None
    runs = load_probes(path, ps)
    if runs is not None:
        keys = setting_cols(ps)
        counts = {}
        for crit in ps["criterion"].unique():
            stable = judge(runs, crit)
            for (vals), idx in runs.groupby(keys + ["target_lr"]).groups.items():
                pos = runs.index.get_indexer(idx)
                counts[(crit,) + tuple(vals)] = (len(pos), int(stable[pos].sum()))
    for i, row in ps.iterrows():
        where = f"row {i + 2}"
        n, k = int(row["n"]), int(row["n_stable"])
        chk.value(where, "p_stable", row["p_stable"], k / n)
        if "p_low" in row:
            lo, hi = wilson(k, n)
            chk.value(where, "p_low", row["p_low"], lo, 1e-12, absolute=True)
            chk.value(where, "p_high", row["p_high"], hi, 1e-12, absolute=True)
        if counts is not None:
            mine = counts.get((row["criterion"],) + tuple(row[c] for c in keys) + (float(row["lr"]),))
            assert mine is not None, f"{chk.name} {where}: no runs at this setting and LR"
            chk.equal(where, "n", row["n"], mine[0])
            chk.equal(where, "n_stable", row["n_stable"], mine[1])
    if counts is not None:
        assert len(ps) == len(counts), f"{chk.name}: rows != criteria x settings x LRs of runs.csv"
    chk.done(len(ps))


MEDIAN_RANGE = [  # (summary, per-seed file, group columns, value column(s) -> (value, censored) of a seed)
    ("mechanisms/warmup.csv", "mechanisms/warmup_per_seed.csv", ["activation", "warmup_steps"], None),
    ("mechanisms/catapult_boundaries_summary.csv", "mechanisms/catapult_boundaries.csv", ["activation"], "boundary"),
]


def _median_range_cases():
    return [pytest.param(*c, id=c[0]) for c in MEDIAN_RANGE if (RESULTS / c[0]).exists()]


@pytest.mark.parametrize("summary,per_seed,group,long", _median_range_cases())
def test_median_and_range(summary, per_seed, group, long) -> None:
    summ, seeds = read(RESULTS / summary), read(RESULTS / per_seed)
    chk = Checker(summary)
    for i, row in summ.iterrows():
        where = f"row {i + 2}"
        sub = seeds
        for g in group:
            sub = sub[sub[g] == row[g]]
        if long is None:  # warmup_per_seed: largest_trainable_c, first_untrainable_c, censored
            vf = []
            for _, s in sub.iterrows():
                f = FLAG[s["censored"]]
                v = num(s["first_untrainable_c"]) if f == -1 else num(s["largest_trainable_c"])
                vf.append((math.log(v), f))
        else:  # catapult_boundaries: one column per boundary; only last_trainable carries a flag
            col = row[long]
            vf = []
            for _, s in sub.iterrows():
                f = FLAG[s["trainable_censored"]] if col == "last_trainable" else 0
                vf.append((math.log(num(s[col])), f))
        vals, flags = [v for v, _ in vf], [f for _, f in vf]
        chk.equal(where, "n_seeds", row["n_seeds"], len(vf))
        chk.equal(where, "n_censored_below", row["n_censored_below"], flags.count(-1))
        chk.equal(where, "n_censored_above", row["n_censored_above"], flags.count(1))
        chk.flagged(where, "median", row, fmedian(vals, flags), "median_censored")
        chk.flagged(where, "min", row, kth(vals, flags, 1, True), "min_censored")
        chk.flagged(where, "max", row, kth(vals, flags, 1, False), "max_censored")
    chk.done(len(summ))


# ---------------------------------------------------------------------------------------------------
# the exact statistics above, against brute force and scipy (so a mismatch is the file's, not ours)

def test_own_statistics_against_brute_force() -> None:
    import itertools
    rng = np.random.default_rng(0)
    for n in range(1, 9):
        d = list(np.round(rng.normal(size=n), 1))  # ties and zeros on purpose
        nz = [x for x in d if x != 0]
        r = doubled_midranks([abs(x) for x in nz])
        w = sum(ri for ri, x in zip(r, nz) if x > 0)
        mean = sum(r) / 2
        flips = [sum(ri for ri, s in zip(r, signs) if s) for signs in itertools.product([0, 1], repeat=len(nz))]
        brute = sum(abs(f - mean) >= abs(w - mean) - 1e-12 for f in flips) / max(len(flips), 1) if nz else 1.0
        assert signed_rank_p(d) == pytest.approx(brute, abs=1e-15)
    assert median_rank(5) == (1, 0.9375) and median_rank(8)[0] == 2
    assert math.isclose(median_rank(8)[1], 1 - 2 * 9 / 256)
    assert signed_rank_k(8) == (6, 0.921875)
    assert holm([0.0390625, 0.0078125, 0.0390625, float("nan"), 0.1953125])[:3] == [0.1171875, 0.03125, 0.1171875]
    scipy_stats = pytest.importorskip("scipy.stats")
    a, b = [0.3, 1.2, 2.5, 0.7, 1.9], [2.2, 3.1, 0.9, 4.0]
    ref = scipy_stats.mannwhitneyu(b, a, alternative="two-sided", method="exact").pvalue
    assert rank_sum_p(a, b) == pytest.approx(ref, rel=1e-12)
    d = [0.5, -1.25, 2.0, 3.5, -0.25, 1.5, 2.75]
    ref = scipy_stats.wilcoxon(d, alternative="two-sided", method="exact").pvalue
    assert signed_rank_p(d) == pytest.approx(ref, rel=1e-12)
    assert sign_test_p([1] * 6 + [-1] * 2) == pytest.approx(scipy_stats.binomtest(6, 8).pvalue, rel=1e-12)
    assert wilson(8, 8)[0] == pytest.approx(0.7472764025762371, abs=1e-15)
