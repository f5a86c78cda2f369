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

import shutil
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any, cast

import orjson
from rocksdict import Options, Rdict, WriteBatch

WRITE_BUFFER_BYTES = 16 * 1024 * 1024
BLOCK_CACHE_BYTES = 32 * 1024 * 1024


def _options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(WRITE_BUFFER_BYTES)
    options.set_max_write_buffer_number(2)
    return options


def _encode(value: Any) -> bytes:
    return orjson.dumps(value)


WRITE_BACK_ENTRIES = 10_000
"""Values a ``DiskState`` holds unencoded before writing them to RocksDB at once."""


class DiskState(MutableMapping[Any, Any]):
    """A JSON-keyed, JSON-valued mapping in a RocksDB database at ``path`` (created when
    missing; ``destroy`` removes it). Tuple keys come back as lists when iterated.

    Written values are held as they are, up to ``write_back`` of them, and encoded and
    written in one batch when that many are held (or the mapping is iterated, counted,
    deleted from or closed): a key written again meanwhile (a customer's order index,
    rewritten with each new order) is encoded once, and a value read back soon after it
    was written (an order's summary) is not decoded. Values read are not to be mutated
    (as with a dict)."""

    def __init__(self, path: Path, write_back: int = WRITE_BACK_ENTRIES) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = Rdict(str(path), _options())
        self._held: dict[bytes, Any] = {}
        self._write_back = write_back

    def __getitem__(self, key: Any) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        """As ``Mapping.get``, without raising and catching a KeyError for a missing key
        (most of a rebuild's lookups)."""
        raw_key = _encode(key)
        held = self._held.get(raw_key, _MISSING)
        if held is not _MISSING:
            return held
        raw = self._db.get(raw_key)
        return default if raw is None else orjson.loads(raw)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._held[_encode(key)] = value
        if len(self._held) >= self._write_back:
            self.flush()

    def flush(self) -> None:
        """Write the values held."""
        if self._held:
            batch = WriteBatch(raw_mode=True)
            for raw_key, value in self._held.items():
                batch.put(raw_key, _encode(value))
            self._db.write(batch)
            self._held.clear()

    def __delitem__(self, key: Any) -> None:
        self.flush()
        if self._db.get(_encode(key)) is None:
            raise KeyError(key)
        del self._db[_encode(key)]

    def __iter__(self) -> Iterator[Any]:
        self.flush()
        for raw in self._db.keys():
            yield orjson.loads(cast(bytes, raw))

    def __len__(self) -> int:
        self.flush()
        return sum(1 for _ in self._db.keys())

    def close(self) -> None:
        self.flush()
        self._db.close()

    def destroy(self) -> None:
        """Close and remove the database (what is held is dropped unwritten)."""
        self._held.clear()
        self._db.close()
        shutil.rmtree(self.path, ignore_errors=True)


_MISSING = object()
