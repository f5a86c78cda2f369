"""A rebuild's join state on disk: a mapping over RocksDB (the ``rocksdict`` wheel).

A rebuild folds every record of the topics, so its join state (each order's
facts, each customer's totals and order summaries) grows with the history. Kept
in a dict it would take the memory of the whole history; kept here it takes
disk, and memory stays bounded by RocksDB's write buffers and block cache and
by the pipeline's cache of decoded states (``joins.DecodedStates``), whatever
the topics hold. Keys and values are JSON documents, as in the processors'
Faust tables.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any, cast

from rocksdict import Options, Rdict

WRITE_BUFFER_BYTES = 16 * 1024 * 1024
BLOCK_CACHE_BYTES = 32 * 1024 * 1024


def _options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(WRITE_BUFFER_BYTES)
    options.set_max_write_buffer_number(2)
    return options


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class DiskState(MutableMapping[Any, Any]):
    """A JSON-keyed, JSON-valued mapping in a RocksDB database at ``path`` (created when
    missing; ``destroy`` removes it). Tuple keys come back as lists when iterated."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = Rdict(str(path), _options())

    def __getitem__(self, key: Any) -> Any:
        raw = self._db.get(_encode(key))
        if raw is None:
            raise KeyError(key)
        return json.loads(raw)

    def get(self, key: Any, default: Any = None) -> Any:
        """As ``Mapping.get``, without raising and catching a KeyError for a missing key
        (most of a rebuild's lookups)."""
        raw = self._db.get(_encode(key))
        return default if raw is None else json.loads(raw)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._db[_encode(key)] = _encode(value)

    def __delitem__(self, key: Any) -> None:
        if self._db.get(_encode(key)) is None:
            raise KeyError(key)
        del self._db[_encode(key)]

    def __iter__(self) -> Iterator[Any]:
        for raw in self._db.keys():
            yield json.loads(cast(bytes, raw))

    def __len__(self) -> int:
        return sum(1 for _ in self._db.keys())

    def close(self) -> None:
        self._db.close()

    def destroy(self) -> None:
        """Close and remove the database."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
