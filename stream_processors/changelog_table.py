"""The join's keyed state in the batch processor: RocksDB on local disk, every write also
sent to the table's compacted changelog topic, and restored from it for the partitions a
worker is given (Kafka Streams' state stores; what Faust's tables did here).

A batch's writes are held as they are (a key written by several records of the batch is
encoded once), then ``take()`` encodes them once each, writes them to RocksDB in one
batch and returns them as changelog records (``Changes``), which the processor sends
with the batch's other records, one producer batch per partition, and awaits before it
commits the batch's offsets. So what is committed is in the changelog, and a worker
taking a partition over restores at least that.

Keys and values are JSON, as Faust wrote them to the same changelog topics: a
deployment moves from one processor to the other with its state. The local copy is kept
across clean restarts, with the changelog offset each partition was restored or written
up to; after an unclean stop the processor removes it (``table_dir``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch

from stream_processors.outbox import partition_of

WRITE_BUFFER_BYTES = 4 * 1024 * 1024
OFFSETS_KEY = b"\x00changelog-offsets"
"""Where the changelog offset reached per partition is kept (not JSON: no key collides)."""
ChangelogRecord = tuple[int, bytes, bytes | None]  # partition, key, value (None: deleted)
_DELETED = object()


BLOCK_CACHE_BYTES = 8 * 1024 * 1024


BLOOM_BITS_PER_KEY = 10
"""A Bloom filter per table file (about 1% false positives), as Kafka Streams configures
its RocksDB stores: most reads of a batch are of keys not stored yet (a new order, a
customer's first summary), and without one each looked through every file whose key
range holds it: 4.9 to 5.7 us against 0.7 to 1.0 with it (200,000 keys of 1.1 KB,
lookups between them; a stored key's lookup is unchanged, 4.6 to 5.8 us). The filters
take 10 bits a key, in the bounded block cache."""


def _options() -> Options:
    """Small write buffers and a bounded block cache, index and filter blocks in it: the
    memory a table takes stays bounded whatever the state's size."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(WRITE_BUFFER_BYTES)
    options.set_max_write_buffer_number(2)
    table = BlockBasedOptions()
    table.set_block_cache(Cache(BLOCK_CACHE_BYTES))
    table.set_cache_index_and_filter_blocks(True)
    table.set_bloom_filter(BLOOM_BITS_PER_KEY, False)
    options.set_block_based_table_factory(table)
    return options


@dataclass(frozen=True)
class Changes:
    """What a batch wrote to a table, as changelog records.

    ``records``: each key's last value, in the order the keys were last written: what
    the local copy keeps, and what the changelog gets of a partition whose records fit
    in one producer batch, which the broker appends whole or not at all (so a crash
    keeps all of a batch's writes to that partition or none of them).
    ``every(partition)``: for a table ``in_order``, each write to the partition in the
    order written, for a partition whose ``records`` do not fit in one producer batch
    (several then, of which a crash may keep a prefix); None for the other tables."""

    records: list[ChangelogRecord]
    every_write: Callable[[int], list[ChangelogRecord]] | None = None

    def every(self, partition: int) -> list[ChangelogRecord] | None:
        return None if self.every_write is None else self.every_write(partition)


class ChangelogTable(MutableMapping[Any, Any]):
    """A JSON-keyed, JSON-valued mapping at ``path`` whose writes go to ``topic`` too, each
    to the partition its key belongs to (``key_of`` gives the string a key is partitioned
    by: the order or customer id). Values read are not to be mutated (as with a dict).

    ``in_order``: every write is kept, in the order written, besides each key's last
    value (``Changes.every``). The customer side writes one step as several keys in an
    order that lets a redelivered record complete what a crash kept a prefix of
    (``projections.joins.CustomerSide._keep``). A partition's last values go to the
    changelog when they fit in one producer batch, which a crash keeps whole or not at
    all (measured: the customer table's 3,300 writes of a batch held 1,600 keys, and
    coalescing them took the processor's CPU in a catch-up from 2.75-3.29 s to
    2.42-2.69, 3 alternated pairs); when they do not, every write goes, in order, over
    several, and whatever prefix of them a crash keeps is a prefix of the steps. Each
    order's state is whole in one key, so the order side's table needs neither."""

    def __init__(
        self,
        path: Path,
        topic: str,
        partitions: int,
        key_of: Callable[[Any], str],
        in_order: bool = False,
    ) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.topic = topic
        self._partitions = partitions
        self._key_of = key_of
        self._in_order = in_order
        self._db = Rdict(str(path), _options())
        self._held: dict[bytes, tuple[Any, Any]] = {}  # raw key -> (key, value)
        self._written: list[tuple[bytes, Any, Any]] = []  # in_order: every write
        saved = self._db.get(OFFSETS_KEY)
        self.offsets: dict[int, int] = (
            {} if saved is None else {int(p): o for p, o in orjson.loads(saved).items()}
        )
        """Per partition: the changelog offset up to which the local copy holds it."""

    def __getitem__(self, key: Any) -> Any:
        value = self.get(key, _DELETED)
        if value is _DELETED:
            raise KeyError(key)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        raw_key = orjson.dumps(key)
        held = self._held.get(raw_key)
        if held is not None:
            return default if held[1] is _DELETED else held[1]
        raw = self._db.get(raw_key)
        return default if raw is None else orjson.loads(raw)

    def __setitem__(self, key: Any, value: Any) -> None:
        raw_key = orjson.dumps(key)
        if self._in_order:
            self._written.append((raw_key, key, value))
        self._held.pop(raw_key, None)  # the changelog gets the keys in the order last written
        self._held[raw_key] = (key, value)

    def __delitem__(self, key: Any) -> None:
        if self.get(key, _DELETED) is _DELETED:
            raise KeyError(key)
        self[key] = _DELETED

    def __iter__(self) -> Iterator[Any]:
        self._write(self.take_pending().records)
        for raw in self._db.keys():
            if raw != OFFSETS_KEY:
                yield orjson.loads(cast(bytes, raw))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def take(self) -> Changes:
        """The writes since the last ``take``, written to the local copy and returned as
        changelog records, each key's last value in the order keys were last written."""
        changes = self.take_pending()
        self._write(changes.records)
        return changes

    def take_pending(self) -> Changes:
        held, self._held = self._held, {}
        written, self._written = self._written, []
        records = [self._record(raw_key, key, value) for raw_key, (key, value) in held.items()]
        if not self._in_order:
            return Changes(records)

        def every(partition: int) -> list[ChangelogRecord]:
            return [
                self._record(raw_key, key, value)
                for raw_key, key, value in written
                if self._partition(key) == partition
            ]

        return Changes(records, every)

    def _partition(self, key: Any) -> int:
        return partition_of(self._key_of(key), self._partitions)

    def _record(self, raw_key: bytes, key: Any, value: Any) -> ChangelogRecord:
        encoded = None if value is _DELETED else orjson.dumps(value)
        return (self._partition(key), raw_key, encoded)

    def _write(self, records: Iterable[ChangelogRecord]) -> None:
        batch = WriteBatch(raw_mode=True)
        for _, raw_key, raw_value in records:
            if raw_value is None:
                batch.delete(raw_key)
            else:
                batch.put(raw_key, raw_value)
        batch.put(OFFSETS_KEY, orjson.dumps({str(p): o for p, o in self.offsets.items()}))
        self._db.write(batch)

    def sent(self, partition: int, reached: int) -> None:
        """This table's changelog records are stored in ``partition`` below ``reached``."""
        if self.offsets.get(partition, 0) < reached:
            self.offsets[partition] = reached

    async def restore(self, reader: AIOKafkaConsumer, partitions: Iterable[int]) -> int:
        """Bring the local copy of ``partitions`` up to their changelog's end (from where
        it was restored or written up to, or the beginning); returns the records read.

        Keys are normalized to this table's encoding (Faust's JSON had spaces), so a
        key written by both comes back as one, the later write winning."""
        wanted = [TopicPartition(self.topic, p) for p in partitions]
        if not wanted:
            return 0
        ends = await reader.end_offsets(wanted)
        todo = {tp: ends[tp] for tp in wanted if self.offsets.get(tp.partition, 0) < ends[tp]}
        if not todo:
            return 0
        reader.assign(list(todo))
        for tp in todo:
            reader.seek(tp, self.offsets.get(tp.partition, 0))
        read = 0
        try:
            while todo:
                got = await reader.getmany(*todo, timeout_ms=1000, max_records=20_000)
                batch = WriteBatch(raw_mode=True)
                for tp, records in got.items():
                    for record in records:
                        if record.offset >= todo[tp] or record.key is None:
                            continue
                        key = orjson.dumps(orjson.loads(record.key))
                        if record.value is None:
                            batch.delete(key)
                        else:
                            batch.put(key, record.value)
                        read += 1
                for tp in list(todo):
                    position = await reader.position(tp)
                    self.offsets[tp.partition] = max(
                        self.offsets.get(tp.partition, 0), min(position, todo[tp])
                    )
                    if position >= todo[tp]:
                        del todo[tp]
                batch.put(OFFSETS_KEY, orjson.dumps({str(p): o for p, o in self.offsets.items()}))
                self._db.write(batch)
        finally:
            reader.assign([])
        return read

    @property
    def pending(self) -> int:
        """Writes held for the next ``take`` (none after a batch completed)."""
        return len(self._held) + len(self._written)

    def close(self) -> None:
        """Save the offsets reached and close the local copy. What is held is dropped: it
        is neither in the changelog nor committed (the stop was not clean)."""
        with contextlib.suppress(Exception):
            self._write([])
        self._db.close()
