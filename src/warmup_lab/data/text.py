"""Character-level language modeling on a text file (data.path), the whole file in memory.

Vocabulary = the file's characters; the first 90% trains, the last 10% evaluates. A training batch
is `batch_size` random windows drawn from a generator seeded by (seed, step); the eval set is the
eval split cut into consecutive non-overlapping windows, so it never changes between evaluations.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from warmup_lab.data.seeds import generator
from warmup_lab.data.sequences import Batch, SequenceData
from warmup_lab.errors import DataMissingError, require
from warmup_lab.tasks.base import entropy

TRAIN_FRACTION = 0.9


def read_text(path: str | None) -> str:
    """The file's text; a missing, empty, binary or non-UTF-8 file, or a directory, is one line saying which."""
    fix = "set data.path=/path/to/file.txt (UTF-8 text)"
    if not path:
        raise DataMissingError(f"data.path is not set: charlm needs a text file; {fix}")
    file = Path(path).expanduser()
    if file.is_dir():
        raise DataMissingError(f"data.path={path} is a directory, not a text file: {fix}")
    if file.exists() and not file.is_file():
        raise DataMissingError(f"data.path={path} is not a regular file (a FIFO, socket or device); "
                               f"training reads it many times: {fix}")
    if not file.is_file():
        raise DataMissingError(f"data.path={path} does not exist: {fix}")
    try:
        raw = file.read_bytes()
    except OSError as err:
        raise DataMissingError(f"data.path={path} cannot be read ({err.strerror}): {fix}") from None
    if not raw:
        raise DataMissingError(f"data.path={path} is empty: {fix}")
    if b"\0" in raw:
        raise DataMissingError(f"data.path={path} is a binary file (NUL byte at offset {raw.index(0)}), "
                               f"not text: {fix}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataMissingError(f"data.path={path} is not UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}): "
                               f"convert it (iconv -t UTF-8) or {fix}") from None


@lru_cache(maxsize=2)
def _encode(text: str) -> tuple[list[str], torch.Tensor]:
    """The text's alphabet and its character ids: kept for the next run of a worker process (a sweep's
    workers run one run after another on the same text; encoding 1M characters costs ~0.06 s each time)."""
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    return chars, ids


def charlm(path: str | None, block_size: int, seed: int, batch_size: int, device: torch.device,
           corpus: tuple[str, dict] | None = None) -> SequenceData:
    """LM data from the file at `path`, or from `corpus` = (text, provenance) when given (data/pysource.py)."""
    text, source = corpus if corpus is not None else (read_text(path), {"path": str(path)})
    require(block_size >= 1, "data.block_size", block_size, "an integer >= 1")
    chars, ids = _encode(text)
    n_train = int(TRAIN_FRACTION * len(ids))
    train, held = ids[:n_train].to(device), ids[n_train:]
    require(len(held) > block_size and n_train > block_size + 1, "data.block_size", block_size,
            f"longer than the eval split ({len(held)} of the {len(ids)} chars in {path}): lower data.block_size "
            f"or use a file of more than {(block_size + 1) * 10} chars")
    windows = held[: (len(held) - 1) // block_size * block_size + 1]
    test = (windows[:-1].view(-1, block_size).to(device), windows[1:].view(-1, block_size).to(device))
    offsets = torch.arange(block_size + 1, device=device)

    def batch(step: int) -> Batch:
        start = torch.randint(0, n_train - block_size, (batch_size, 1),
                              generator=generator(device, "charlm", seed, step), device=device)
        chunk = train[start + offsets]
        return chunk[:, :-1], chunk[:, 1:]

    return SequenceData("charlm", len(chars), block_size, len(chars), batch, test, n_train,
                        {**source, "n_chars": len(ids), "unigram_entropy": entropy(ids[:n_train])})
