"""Read back what W&B wrote to an offline run file (`run-<id>.wandb`).

The file is W&B's transaction log: a 7-byte header (":W&B", magic 0xBEE1, version 0), then
LevelDB-log framing (32 KiB blocks; each record chunk has crc32(4) length(2) type(1)) around protobuf
`Record` messages. wandb ships the protobufs but no reader, and its public API cannot read offline
runs, so tests and audits use this to check what actually landed on disk.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any, Iterator

BLOCK = 32 * 1024
HEADER = 7
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _payloads(data: bytes) -> Iterator[bytes]:
    if data[:4] != b":W&B":
        raise ValueError("not a W&B run file (missing ':W&B' header)")
    pos, pending = HEADER, b""
    while pos + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK_HEADER:  # block trailer padding
            pos += left_in_block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunk = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""
        else:  # zero padding at the end of a file being written
            break


def read_records(path: str | Path) -> Iterator[Any]:
    """Every protobuf Record in the file, in order."""
    from wandb.proto import wandb_internal_pb2

    for payload in _payloads(Path(path).read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        yield record


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def read_run(path: str | Path) -> dict[str, Any]:
    """{'history': [row dicts], 'summary': {...}, 'config': {...}, 'run': {id, group, name, project, job_type, tags}}."""
    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    config: dict[str, Any] = {}
    run: dict[str, Any] = {}
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "config":
            config.update({_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "run":
            r = record.run
            run = {"id": r.run_id, "group": r.run_group, "name": r.display_name, "project": r.project,
                   "job_type": r.job_type, "tags": list(r.tags)}
            config.update({_key(i): json.loads(i.value_json) for i in r.config.update})
    return {"history": history, "summary": summary, "config": config, "run": run}


def find_run_files(root: str | Path) -> list[Path]:
    """Every offline run file under `root` (not the `latest-run` alias of the newest one)."""
    return sorted(p for p in Path(root).rglob("run-*.wandb") if "latest-run" not in p.parts)


def wait_complete(path: str | Path, timeout: float = 60.0) -> bool:
    """Wait until the run's `exit` record is on disk.

    `wandb.finish()` can return before W&B's separate core process has flushed the offline file,
    so a reader that needs the whole run waits for its last record rather than trusting the return.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if any(r.WhichOneof("record_type") == "exit" for r in read_records(path)):
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    return False
