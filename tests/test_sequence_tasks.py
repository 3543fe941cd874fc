"""Sequence tasks end to end: data correctness, batch determinism, learning, evaluation, Hydra configs."""

import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from warmup_lab.data.sequences import IGNORE, modadd
from warmup_lab.errors import DataMissingError
from warmup_lab.tasks import build_task
from warmup_lab.tasks.sequence import build_sequence_task
from warmup_lab.paths import CONF_DIR

CONF = CONF_DIR
CPU = torch.device("cpu")
TASKS = ["modadd", "copy", "reverse", "charlm"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("It was the best of times, it was the worst of times; " * 40, encoding="utf-8")
    return path


def make_cfg(task, seed=0, batch_size=16, eval_batches=None, **data):
    """The shipped model and data configs plus the few run keys a task reads."""
    kind = "lm" if task == "charlm" else "sequence"
    return OmegaConf.create({
        "seed": seed, "task": {"name": task, "kind": kind},
        "model": OmegaConf.load(CONF / "model" / "transformer.yaml"),
        "data": OmegaConf.merge(OmegaConf.load(CONF / "data" / f"{task}.yaml"), data),
        "train": {"batch_size": batch_size, "eval_batches": eval_batches},
    })


def make_task(task, corpus=None, **kw):
    if task == "charlm":
        kw.setdefault("path", str(corpus))
        kw.setdefault("block_size", 16)
    return build_sequence_task(make_cfg(task, **kw), CPU)


@pytest.mark.parametrize("name", TASKS)
def test_adamw_reduces_loss_on_a_fixed_batch(name, corpus):
    task = make_task(name, corpus)
    batch = task.batch(0)
    opt = torch.optim.AdamW(task.model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = task.loss(task.model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("name", TASKS)
def test_batches_are_a_pure_function_of_seed_and_step(name, corpus):
    a, b = make_task(name, corpus), make_task(name, corpus)
    other_seed = make_task(name, corpus, seed=1)
    for step in (0, 7, 500):
        xa, ya = a.batch(step)
        assert torch.equal(xa, b.batch(step)[0]) and torch.equal(ya, b.batch(step)[1])
        assert torch.equal(xa, a.batch(step)[0])  # asking again (e.g. after a resume) changes nothing
        assert not torch.equal(xa, a.batch(step + 1)[0])
        assert not torch.equal(xa, other_seed.batch(step)[0])
        assert xa.shape == ya.shape == (16, a.info["seq_len"])


def test_modadd_split_is_disjoint_covers_all_pairs_and_epochs_are_permutations():
    p, bs = 11, 7  # 60 train pairs: batches straddle epoch boundaries
    task = make_task("modadd", p=p, batch_size=bs)
    n_train = task.info["n_train"]
    assert n_train == int(0.5 * p * p) and task.info["n_test"] == p * p - n_train
    xs, ys = zip(*(task.batch(s) for s in range(2 * n_train // bs + 1)))
    x, y = torch.cat(xs), torch.cat(ys)
    key = lambda t: (t[:, 0] * p + t[:, 1]).tolist()  # noqa: E731
    epoch0, epoch1 = key(x[:n_train]), key(x[n_train:2 * n_train])
    assert len(set(epoch0)) == n_train and set(epoch0) == set(epoch1) and epoch0 != epoch1
    data = modadd(p, 0.5, 0, 0, bs, CPU)  # the same split, to read its test part
    test = set(key(data.test[0]))
    assert test.isdisjoint(epoch0) and len(test | set(epoch0)) == p * p
    assert (x[:, 2] == p).all() and (y[:, :2] == IGNORE).all()
    assert torch.equal(y[:, 2], (x[:, 0] + x[:, 1]) % p)
    assert torch.equal(data.test[1][:, 2], (data.test[0][:, 0] + data.test[0][:, 1]) % p)


@pytest.mark.parametrize("name", ["copy", "reverse"])
def test_copy_and_reverse_targets(name):
    task = make_task(name, length=5, vocab=7)
    x, y = task.batch(3)
    L, sep = 5, 7
    assert x.shape == (16, 2 * L) and (x[:, L] == sep).all() and (x[:, :L] < sep).all()
    src = x[:, :L]
    want = src.flip(1) if name == "reverse" else src
    assert torch.equal(y[:, L:], want) and (y[:, :L] == IGNORE).all()
    assert torch.equal(x[:, L + 1:], y[:, L:-1])  # teacher forcing: the input holds the shifted target
    assert task.chance_acc == pytest.approx(1 / 7) and task.info["vocab_size"] == 8
    # the bar of learned_<f>: the best constant predictor, uniform over the 7 symbols (the targets are uniform)
    assert task.baseline_loss == pytest.approx(math.log(7)) and task.info["baseline_loss"] == pytest.approx(math.log(7))


def test_charlm_vocab_shift_and_perplexity(corpus):
    text = corpus.read_text(encoding="utf-8")
    task = make_task("charlm", corpus)
    assert task.kind == "lm" and task.info["vocab_size"] == len(set(text))
    assert task.chance_acc == pytest.approx(1 / len(set(text)))
    x, y = task.batch(0)
    assert torch.equal(x[:, 1:], y[:, :-1])
    chars = sorted(set(text))
    row = "".join(chars[i] for i in x[0].tolist()) + chars[y[0, -1].item()]
    assert row in text[: int(0.9 * len(text))]
    m = task.evaluate(task.model)
    assert set(m) == {"eval_loss", "eval_acc", "eval_ppl"}
    assert m["eval_ppl"] == pytest.approx(math.exp(m["eval_loss"]))
    assert task.info["n_test"] == (len(text) - int(0.9 * len(text)) - 1) // 16


@pytest.mark.parametrize("path", [None, "/nonexistent/dir/corpus.txt"])
def test_charlm_without_its_file_says_where_to_put_it(path):
    with pytest.raises(DataMissingError, match="data.path") as err:
        build_sequence_task(make_cfg("charlm", path=path), CPU)
    assert "data.path=/path/to/file.txt" in str(err.value)
    if path:
        assert path in str(err.value)


@pytest.mark.parametrize("name", TASKS)
def test_evaluate_at_init_is_near_chance_and_restores_train_mode(name, corpus):
    task = make_task(name, corpus)
    assert task.model.training
    m = task.evaluate(task.model)
    assert task.model.training
    assert m["eval_acc"] < task.chance_acc + 0.1
    assert abs(m["eval_loss"] - math.log(task.info["vocab_size"])) < 0.5
    if name != "charlm":
        assert 0 <= m["eval_exact_match"] <= m["eval_acc"]
    assert task.evaluate(task.model) == m  # deterministic


def test_eval_batches_limits_the_eval_set():
    full = make_task("copy", n_test=600)
    part = make_task("copy", n_test=600, eval_batches=2, eval_batch_size=100)
    assert full.info["n_eval"] == 600 and part.info["n_eval"] == 200


def _compose(overrides):
    """Compose conf/train.yaml as the CLI does."""
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("train", overrides=overrides)


@pytest.mark.parametrize("name", TASKS)
def test_hydra_composition(name, corpus):
    extra = [f"data.path={corpus}"] if name == "charlm" else []
    cfg = _compose([f"task={name}", "train.batch_size=8", "train.eval_batches=1"] + extra)
    assert cfg.task.name == name and cfg.data.name == name and cfg.model.name == "transformer"
    assert cfg.task.kind == ("lm" if name == "charlm" else "sequence")
    task = build_task(cfg, CPU)
    assert task.name == name and torch.isfinite(task.loss(task.model, task.batch(0)))


def test_hydra_reverse_post_ln_with_qk_layernorm():
    cfg = _compose(["task=reverse", "model.norm_position=post", "model.qk_layernorm=true"])
    assert cfg.data.name == "reverse" and cfg.model.norm_position == "post" and cfg.model.qk_layernorm
    task = build_task(cfg, CPU)
    assert isinstance(task.model.blocks[0].attn.q_ln, torch.nn.LayerNorm)
    assert isinstance(task.model.ln_f, torch.nn.Identity)
