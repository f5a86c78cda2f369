#!/usr/bin/env bash
# Eventfold's local stack without Docker: real Kafka (KRaft, Maven Central jars),
# FerretDB (built from the Go module proxy, SQLite backend) and Redis (Debian),
# provisioned into a git-ignored folder and started/stopped by pid.
#
#   stack/stack.sh provision   fetch/build what is missing (idempotent, cached)
#   stack/stack.sh up          provision, then start the three servers (detached)
#   stack/stack.sh down        stop everything this folder started (by pid)
#   stack/stack.sh status      what is running
#   stack/stack.sh stop NAME   stop one process (fault injection; 'up' starts it again)
#   stack/stack.sh up-all      servers plus the processors and both APIs (detached)
#   stack/stack.sh run         the same in the foreground; Ctrl-C stops everything
#
# Ports and folders come from the environment (defaults in parentheses):
#   EVENTFOLD_STACK_DIR (.stack/dev)    EVENTFOLD_KAFKA_PORT (9092)
#   EVENTFOLD_KAFKA_CONTROLLER_PORT (9093)  EVENTFOLD_MONGO_PORT (27017)
#   EVENTFOLD_FERRETDB_DEBUG_PORT (8088)    EVENTFOLD_REDIS_PORT (6379)
#   EVENTFOLD_PRODUCER_PORT (8001)      EVENTFOLD_QUERY_PORT (8002)
#   EVENTFOLD_CACHE_DIR (~/.cache/eventfold: downloaded/built servers, shared by clones)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAFKA_VERSION="3.9.1"
FERRETDB_VERSION="v1.24.2"

CACHE_DIR="${EVENTFOLD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/eventfold}"
STACK_DIR="${EVENTFOLD_STACK_DIR:-$ROOT/.stack/dev}"
KAFKA_PORT="${EVENTFOLD_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${EVENTFOLD_KAFKA_CONTROLLER_PORT:-9093}"
MONGO_PORT="${EVENTFOLD_MONGO_PORT:-27017}"
FERRETDB_DEBUG_PORT="${EVENTFOLD_FERRETDB_DEBUG_PORT:-8088}"
REDIS_PORT="${EVENTFOLD_REDIS_PORT:-6379}"
PRODUCER_PORT="${EVENTFOLD_PRODUCER_PORT:-8001}"
QUERY_PORT="${EVENTFOLD_QUERY_PORT:-8002}"
START_TIMEOUT="${EVENTFOLD_START_TIMEOUT:-90}"
VENV_BIN="$ROOT/.venv/bin"

KAFKA_LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
# "-idindex-updclose-idin-updbatch-exactnoop-idand": built with the _id lookup,
# update-command, _id $in, batched-update, exact no-op and _id-with-other-
# conditions fixes below (a separate cache entry per set of fixes, so a binary
# built before a fix is not reused).
FERRETDB_BIN="$CACHE_DIR/ferretdb-$FERRETDB_VERSION-idindex-updclose-idin-updbatch-exactnoop-idand/ferretdb"

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

# --- provisioning -----------------------------------------------------------

provision_kafka() {
  [ -f "$KAFKA_LIBS/.complete" ] && return 0
  command -v java >/dev/null || die "java not found: Kafka needs a Java 17 runtime"
  command -v mvn >/dev/null || die "mvn not found: Kafka's jars are fetched with Maven"
  log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central"
  rm -rf "$KAFKA_LIBS" && mkdir -p "$KAFKA_LIBS"
  mvn -q -B -f "$ROOT/stack/kafka-pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS" \
    > "$CACHE_DIR/kafka-provision.log" 2>&1 \
    || die "Maven could not fetch Kafka; see $CACHE_DIR/kafka-provision.log"
  touch "$KAFKA_LIBS/.complete"
}

# FerretDB 1.24's SQLite backend looks documents up by _id with the expression
# _ferretdb_sjson->'$._id', but indexes _id as _ferretdb_sjson->"_id" (the
# string '_id'). SQLite uses an expression index only for the same expression,
# so every find, update and delete by _id scanned the whole table, parsing each
# document's JSON: a write got slower with every document (measured: 87% of
# FerretDB's CPU in SQLite's JSON parser). Both mean the same path; the lookup
# is made to use the index's form.
patch_ferretdb_id_lookups() {
  local file="$1/internal/backends/sqlite/metadata/metadata.go"
  grep -q "IDColumn = DefaultColumn + \"->'\$._id'\"" "$file" || return 1
  sed -i "s|IDColumn = DefaultColumn + \"->'\$._id'\"|IDColumn = DefaultColumn + \"->'_id'\"|" "$file"
  grep -q "IDColumn = DefaultColumn + \"->'_id'\"" "$file"
}

# FerretDB 1.24's update command (update, bulk_write's updates and replaces)
# defers closing each statement's query iterator to the end of the whole
# command (`defer closer.Close()` inside its per-statement loop). A statement
# limited to one document (multi: false: every ReplaceOne and UpdateOne) stops
# reading after its match without draining the rows, so it keeps a pooled
# SQLite connection; the pool holds 100, and the 100th matched statement of one
# command waits for a connection forever (the command, and then the database,
# hang). The closer is closed right after its statement's document is updated.
patch_ferretdb_update_close() {
  local file="$1/internal/handler/msg_update.go"
  python3 - "$file" <<'PY'
import sys
from pathlib import Path

path = Path(sys.argv[1])
text = path.read_text()
deferred = "\t\tcloser := iterator.NewMultiCloser()\n\t\tdefer closer.Close()\n"
update = '\t\tresult, err := common.UpdateDocument(ctx, c, "update", iter, &u)\n'
closed = "\t\tcloser.Close() // eventfold: release the statement's connection now\n"
if text.count(deferred) != 1 or text.count(update) != 1 or text.index(deferred) > text.index(update):
    sys.exit(f"{path}: the deferred closer / UpdateDocument call to patch is not as expected")
text = text.replace(deferred, "\t\tcloser := iterator.NewMultiCloser()\n")
text = text.replace(update, update + closed)
if "defer closer.Close()" in text or text.count(closed) != 1:
    sys.exit(f"{path}: patch not applied as expected")
path.write_text(text)
PY
}

# FerretDB 1.24's SQLite backend pushes down to SQL only a filter on one _id
# value; `{_id: {$in: [...]}}` (how a batch reads the documents it changes)
# fetched and decoded every document of the collection, so reading a batch got
# slower with every document stored. The query is made to select those ids
# with `WHERE <_id> IN (...)` on the _id index; FerretDB still applies the
# whole filter to what it returns, so the result is the same. (`explain` is
# changed alike, so it shows the plan used.)
patch_ferretdb_id_in() {
  local file="$1/internal/backends/sqlite/collection.go"
  python3 - "$file" <<'PY'
import sys
from pathlib import Path

path = Path(sys.argv[1])
text = path.read_text()
anchor = "\tq += whereClause\n\tq += prepareOrderByClause(params.Sort)\n"
pushdown = """\t// eventfold: {_id: {$in: [...]}} selects those ids on the _id index
\tif whereClause == "" && params.Filter.Len() == 1 {
\t\tif cond, ok := must.NotFail(params.Filter.Get(params.Filter.Keys()[0])).(*types.Document); ok &&
\t\t\tparams.Filter.Keys()[0] == "_id" && cond.Len() == 1 && cond.Has("$in") {
\t\t\tif list, ok := must.NotFail(cond.Get("$in")).(*types.Array); ok && list.Len() > 0 && list.Len() <= 10000 {
\t\t\t\tmarks := make([]string, 0, list.Len())
\t\t\t\tids := make([]any, 0, list.Len())
\t\t\t\tfor i := 0; i < list.Len(); i++ {
\t\t\t\t\tswitch id := must.NotFail(list.Get(i)).(type) {
\t\t\t\t\tcase string, types.ObjectID:
\t\t\t\t\t\tmarks = append(marks, "?")
\t\t\t\t\t\tids = append(ids, string(must.NotFail(sjson.MarshalSingleValue(id))))
\t\t\t\t\t}
\t\t\t\t}
\t\t\t\tif len(ids) == list.Len() {
\t\t\t\t\twhereClause = fmt.Sprintf(` WHERE %s IN (%s)`, metadata.IDColumn, strings.Join(marks, ", "))
\t\t\t\t\targs = ids
\t\t\t\t}
\t\t\t}
\t\t}
\t}

"""
explain = "\torderByClause := prepareOrderByClause(params.Sort)\n\tsortPushdown := "
if text.count(anchor) != 1 or text.count(explain) != 1:
    sys.exit(f"{path}: the query's where clause to extend is not as expected")
text = text.replace(anchor, pushdown + anchor)  # the query
text = text.replace(explain, pushdown + explain)  # and its explain, which tests check
path.write_text(text)
PY
}

# FerretDB 1.24's update command (bulk_write's ReplaceOne and UpdateOne) runs
# each statement alone: a query for its document, then a transaction of its
# own to write it. A bulk of ReplaceOne({_id: X}) cost ~2 ms a document, 4-5x an
# insert. A run of statements that each select one document by a string or
# ObjectID _id (and any other conditions; not multi) is instead read with one
# `{_id: {$in: [...]}}` query (pushed down by patch_ferretdb_id_in) and its
# changed documents written with one UpdateAll (one transaction). Each statement
# is still applied by FerretDB's own common.UpdateDocument, to its document as
# the statements before it left it: same filter, matching, errors and counts. An
# upsert of a missing document inserts at once, after the writes before it; on
# an error, the writes before it are made, then the command fails (as before).
# Up to 1,000 statements a batch. Measured A/B (2.6 KB documents, ratios of
# medians of 11 rounds): bulk_write of 400 / 1,000 ReplaceOne x1.9 / x1.8
# faster, now about as costly as a find of those documents. A batch's
# read-modify-write is no more atomic than each statement's was (FerretDB issue
# #3040; Eventfold's writers take turns under a lock). Also: an upsert's `index`
# is its statement's index (as MongoDB reports it), not the count of upserts
# before it.
patch_ferretdb_batched_updates() {
  local dir="$1/internal/handler"
  python3 - "$dir" <<'PY'
import sys
from pathlib import Path

folder = Path(sys.argv[1])
path = folder / "msg_update.go"
text = path.read_text()
loop = "\tfor _, u := range params.Updates {\n\t\tc, err := db.Collection(params.Collection)\n"
query = "\t\tvar qp backends.QueryParams\n\t\tif !h.DisablePushdown {\n\t\t\tqp.Filter = u.Filter\n\t\t}\n"
index = '\t\t\t\t"index", int32(upserted.Len()),\n'
if any(text.count(s) != 1 for s in (loop, query, index)) or text.index(loop) > text.index(query):
    sys.exit(f"{path}: the update loop to batch is not as expected")
text = text.replace(loop, """\tfor idx := 0; idx < len(params.Updates); idx++ { // eventfold: by index, to batch runs
\t\tu := params.Updates[idx]

\t\tc, err := db.Collection(params.Collection)
""")
text = text.replace(query, """\t\t// eventfold: a run of statements each selecting one document by _id, as one batch
\t\tif n := updateBatchLen(params.Updates[idx:]); n > 1 && !h.DisablePushdown {
\t\t\tm, mod, err := updateBatched(ctx, c, params.Updates[idx:idx+n], idx, &upserted)
\t\t\tif err != nil {
\t\t\t\treturn 0, 0, nil, lazyerrors.Error(err)
\t\t\t}

\t\t\tmatched += m
\t\t\tmodified += mod
\t\t\tidx += n - 1

\t\t\tcontinue
\t\t}

""" + query)
text = text.replace(index, '\t\t\t\t"index", int32(idx), // eventfold: the statement\'s index, as MongoDB reports it\n')
path.write_text(text)

batch = folder / "msg_update_eventfold_batch.go"
if batch.exists():
    sys.exit(f"{batch}: already exists")
batch.write_text(r'''package handler

// eventfold: update statements selecting one document by _id, applied as one batch
// (see patch_ferretdb_batched_updates in Eventfold's stack/stack.sh).

import (
	"context"
	"errors"

	"github.com/FerretDB/FerretDB/internal/backends"
	"github.com/FerretDB/FerretDB/internal/handler/common"
	"github.com/FerretDB/FerretDB/internal/handler/sjson"
	"github.com/FerretDB/FerretDB/internal/types"
	"github.com/FerretDB/FerretDB/internal/util/iterator"
	"github.com/FerretDB/FerretDB/internal/util/lazyerrors"
	"github.com/FerretDB/FerretDB/internal/util/must"
)

// maxUpdateBatch bounds the statements of one batch (and the ids of its $in query,
// which the SQLite backend pushes down up to 10,000).
const maxUpdateBatch = 1000

// updateBatchIDKey returns a key for a string or ObjectID _id (distinct per type and value).
func updateBatchIDKey(id any) (string, bool) {
	switch id.(type) {
	case string, types.ObjectID:
		return string(must.NotFail(sjson.MarshalSingleValue(id))), true
	default:
		return "", false
	}
}

// updateBatchKey returns the _id value and key of the one document the statement can
// select: its filter has exactly one top-level _id condition, a string or ObjectID
// (other conditions are applied as usual), and it is not multi.
func updateBatchKey(u *common.Update) (any, string, bool) {
	if u.Multi || u.Filter == nil || u.Update == nil || u.C != nil || u.Collation != nil || u.ArrayFilters != nil {
		return nil, "", false
	}

	var id any
	var ids int

	values := u.Filter.Values()
	for i, k := range u.Filter.Keys() {
		if k == "_id" {
			ids++
			id = values[i]
		}
	}

	if ids != 1 {
		return nil, "", false
	}

	key, ok := updateBatchIDKey(id)

	return id, key, ok
}

// updateBatchLen returns how many statements, from the first, can be applied as one batch.
func updateBatchLen(updates []common.Update) int {
	n := 0
	for n < len(updates) && n < maxUpdateBatch {
		if _, _, ok := updateBatchKey(&updates[n]); !ok {
			break
		}
		n++
	}

	return n
}

// updateBatch stands in for the collection in common.UpdateDocument: a document it
// writes is kept as its statement's document's latest version and written later,
// with the others, by flush; an insertion (upsert) is made at once, after the writes
// before it. Everything else goes to the collection.
type updateBatch struct {
	backends.Collection
	docs    map[string]*types.Document // latest version of each document read or written
	dirty   map[string]struct{}
	pending []string // keys of the documents to write, in the order first changed
	current string   // key of the document the running statement selects
}

// UpdateAll implements backends.Collection interface.
func (b *updateBatch) UpdateAll(ctx context.Context, params *backends.UpdateAllParams) (*backends.UpdateAllResult, error) {
	for _, doc := range params.Docs {
		id, err := doc.Get("_id")
		if key, ok := updateBatchIDKey(id); err != nil || !ok || key != b.current {
			// not the statement's document (not expected): written at once, in order
			if err = b.flush(ctx); err != nil {
				return nil, err
			}

			return b.Collection.UpdateAll(ctx, params)
		}
	}

	for _, doc := range params.Docs {
		if _, ok := b.dirty[b.current]; !ok {
			b.dirty[b.current] = struct{}{}
			b.pending = append(b.pending, b.current)
		}

		b.docs[b.current] = doc
	}

	return &backends.UpdateAllResult{Updated: int32(len(params.Docs))}, nil
}

// InsertAll implements backends.Collection interface.
func (b *updateBatch) InsertAll(ctx context.Context, params *backends.InsertAllParams) (*backends.InsertAllResult, error) {
	if err := b.flush(ctx); err != nil {
		return nil, err
	}

	res, err := b.Collection.InsertAll(ctx, params)
	if err != nil {
		return nil, err
	}

	for _, doc := range params.Docs {
		id, _ := doc.Get("_id")
		if key, ok := updateBatchIDKey(id); ok {
			b.docs[key] = doc
		}
	}

	return res, nil
}

// flush writes the changed documents, in one UpdateAll (one transaction).
func (b *updateBatch) flush(ctx context.Context) error {
	if len(b.pending) == 0 {
		return nil
	}

	docs := make([]*types.Document, len(b.pending))
	for i, key := range b.pending {
		docs[i] = b.docs[key]
	}

	b.pending = b.pending[:0]
	clear(b.dirty)

	_, err := b.Collection.UpdateAll(ctx, &backends.UpdateAllParams{Docs: docs})

	return err
}

// updateBatched applies the statements (a run counted by updateBatchLen; the first is
// the command's statement idx) as the update command applies each, reading their
// documents with one query and writing the changed ones with one UpdateAll.
func updateBatched(ctx context.Context, c backends.Collection, updates []common.Update, idx int, upserted *types.Array) (int32, int32, error) {
	b := &updateBatch{
		Collection: c,
		docs:       make(map[string]*types.Document, len(updates)),
		dirty:      make(map[string]struct{}, len(updates)),
	}

	ids := types.MakeArray(len(updates))
	wanted := make(map[string]struct{}, len(updates))

	for i := range updates {
		id, key, _ := updateBatchKey(&updates[i])
		if _, ok := wanted[key]; !ok {
			wanted[key] = struct{}{}
			ids.Append(id)
		}
	}

	res, err := c.Query(ctx, &backends.QueryParams{
		Filter: must.NotFail(types.NewDocument("_id", must.NotFail(types.NewDocument("$in", ids)))),
	})
	if err != nil {
		return 0, 0, lazyerrors.Error(err)
	}

	for {
		_, doc, err := res.Iter.Next()
		if errors.Is(err, iterator.ErrIteratorDone) {
			break
		}

		if err != nil {
			res.Iter.Close()
			return 0, 0, lazyerrors.Error(err)
		}

		id, _ := doc.Get("_id")
		if key, ok := updateBatchIDKey(id); ok {
			if _, ok = wanted[key]; ok {
				b.docs[key] = doc
			}
		}
	}

	res.Iter.Close()

	var matched, modified int32

	for i := range updates {
		u := updates[i]
		_, b.current, _ = updateBatchKey(&u)

		var docs []*types.Document
		if doc, ok := b.docs[b.current]; ok {
			docs = append(docs, doc.DeepCopy())
		}

		closer := iterator.NewMultiCloser()
		iter := types.DocumentsIterator(iterator.Values(iterator.ForSlice(docs)))
		closer.Add(iter)
		iter = common.FilterIterator(iter, closer, u.Filter)
		iter = common.LimitIterator(iter, closer, 1)

		result, err := common.UpdateDocument(ctx, b, "update", iter, &u)
		closer.Close()

		if err != nil {
			if flushErr := b.flush(ctx); flushErr != nil {
				return 0, 0, lazyerrors.Error(flushErr)
			}

			return 0, 0, err
		}

		matched += result.Matched.Count
		modified += result.Modified.Count

		if result.Upserted.Doc != nil {
			upserted.Append(must.NotFail(types.NewDocument(
				"index", int32(idx+i),
				"_id", must.NotFail(result.Upserted.Doc.Get("_id")),
			)))

			// in case of upsert, MongoDB sets the matched count to 1
			matched++
		}
	}

	if err := b.flush(ctx); err != nil {
		return 0, 0, lazyerrors.Error(err)
	}

	return matched, modified, nil
}
''')
PY
}

# FerretDB 1.24 tells a no-op update (not written, not counted in nModified)
# with comparisons that are not exact. MongoDB leaves a document alone when a
# replacement is binary-equal to it, and a $set when the new value is
# binary-equal to the old one (same field names, order, types and values).
# FerretDB also found equal a replacement changing only number types
# ({f: 1.0} -> {f: 1}: neither written nor counted) and a $set of an embedded
# document with other field names but the same values ({a: 1} -> {b: 1}:
# dropped). Both comparisons are made exact.
patch_ferretdb_exact_noop() {
  local dir="$1/internal/handler/common"
  python3 - "$dir" <<'PY'
import sys
from pathlib import Path

folder = Path(sys.argv[1])
path = folder / "update.go"
text = path.read_text()
replaced = "\tif types.Compare(doc, update) == types.Equal {\n\t\treturn false, nil\n\t}\n"
same = "\t\tif types.Identical(setValue, docValue) {\n"
if text.count(replaced) != 1 or text.count(same) != 1:
    sys.exit(f"{path}: the no-op checks to make exact are not as expected")
text = text.replace(replaced, replaced.replace("types.Compare(doc, update) == types.Equal", "exactlySame(doc, update)"))
text = text.replace(same, "\t\tif exactlySame(setValue, docValue) { // eventfold: field names compared too\n")
path.write_text(text)

helper = folder / "eventfold_same.go"
if helper.exists():
    sys.exit(f"{helper}: already exists")
helper.write_text(r'''package common

// eventfold: see patch_ferretdb_exact_noop in Eventfold's stack/stack.sh.

import (
	"math"

	"github.com/FerretDB/FerretDB/internal/types"
	"github.com/FerretDB/FerretDB/internal/util/must"
)

// exactlySame returns true if a and b have the same field names in the same order, and
// the same types and values: MongoDB's binary equality, with which it tells a no-op
// update. types.Identical does not compare embedded documents' field names.
func exactlySame(a, b any) bool {
	switch a := a.(type) {
	case *types.Document:
		b, ok := b.(*types.Document)
		if !ok || a.Len() != b.Len() {
			return false
		}

		aKeys, bKeys := a.Keys(), b.Keys()
		aValues, bValues := a.Values(), b.Values()

		for i := range aKeys {
			if aKeys[i] != bKeys[i] || !exactlySame(aValues[i], bValues[i]) {
				return false
			}
		}

		return true
	case *types.Array:
		b, ok := b.(*types.Array)
		if !ok || a.Len() != b.Len() {
			return false
		}

		for i := 0; i < a.Len(); i++ {
			if !exactlySame(must.NotFail(a.Get(i)), must.NotFail(b.Get(i))) {
				return false
			}
		}

		return true
	case float64:
		b, ok := b.(float64)
		return ok && math.Float64bits(a) == math.Float64bits(b)
	default:
		return types.Identical(a, b)
	}
}
''')
PY
}

# FerretDB 1.24's SQLite backend pushes an _id condition down to SQL only when it
# is the whole filter: a conditional write such as
# ReplaceOne({_id: X, _rev: R}, doc) (and any find, count or delete of one _id
# with other conditions) read and decoded every document of the collection. The
# _id equality of such a filter selects that _id on the _id index. Every caller
# applies the whole filter to what the query returns (find, getMore, update,
# delete, findAndModify, count, distinct, aggregate's $match), and limits are
# pushed down only without a filter, so the results are the same.
patch_ferretdb_id_and_more() {
  local file="$1/internal/backends/sqlite/collection.go"
  python3 - "$file" <<'PY'
import sys
from pathlib import Path

path = Path(sys.argv[1])
text = path.read_text()
anchor = "\tq += whereClause\n\tq += prepareOrderByClause(params.Sort)\n"
explain = "\torderByClause := prepareOrderByClause(params.Sort)\n\tsortPushdown := "
pushdown = """\t// eventfold: {_id: <string or ObjectID>, <other conditions>...} selects that _id on the _id index
\tif whereClause == "" && params.Filter.Len() > 1 {
\t\tvar idValue any
\t\tvar idKeys int

\t\tfilterValues := params.Filter.Values()
\t\tfor i, k := range params.Filter.Keys() {
\t\t\tif k == "_id" {
\t\t\t\tidKeys++
\t\t\t\tidValue = filterValues[i]
\t\t\t}
\t\t}

\t\tif idKeys == 1 {
\t\t\tswitch idValue.(type) {
\t\t\tcase string, types.ObjectID:
\t\t\t\twhereClause = fmt.Sprintf(` WHERE %s = ?`, metadata.IDColumn)
\t\t\t\targs = []any{string(must.NotFail(sjson.MarshalSingleValue(idValue)))}
\t\t\t}
\t\t}
\t}

"""
if text.count(anchor) != 1 or text.count(explain) != 1 or text.count("// eventfold: {_id: {$in: [...]}}") != 2:
    sys.exit(f"{path}: the query's where clause to extend is not as expected (patch_ferretdb_id_in first)")
text = text.replace(anchor, pushdown + anchor)  # the query
text = text.replace(explain, pushdown + explain)  # and its explain, which tests check
path.write_text(text)
PY
}

provision_ferretdb() {
  [ -x "$FERRETDB_BIN" ] && return 0
  command -v go >/dev/null || die "go not found: FerretDB is built from the Go module proxy"
  log "building FerretDB $FERRETDB_VERSION with $(go version | cut -d' ' -f3)"
  local out="$CACHE_DIR/ferretdb-provision.log" src="$CACHE_DIR/ferretdb-src" mod
  {
    # The module zip lacks build/version/version.txt (generated by their release
    # tooling), and the binary refuses to start without it: copy the module
    # source, write the file with the exact version, build cmd/ferretdb.
    mod="$(go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" \
           | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')" &&
    rm -rf "$src" && cp -r "$mod" "$src" && chmod -R u+w "$src" &&
    echo "$FERRETDB_VERSION" > "$src/build/version/version.txt" &&
    patch_ferretdb_id_lookups "$src" &&
    patch_ferretdb_update_close "$src" &&
    patch_ferretdb_id_in "$src" &&
    patch_ferretdb_batched_updates "$src" &&
    patch_ferretdb_exact_noop "$src" &&
    patch_ferretdb_id_and_more "$src" &&
    mkdir -p "$(dirname "$FERRETDB_BIN")" &&
    (cd "$src" && GOFLAGS="-trimpath -mod=mod" go build -o "$FERRETDB_BIN.tmp" ./cmd/ferretdb) &&
    mv "$FERRETDB_BIN.tmp" "$FERRETDB_BIN" && rm -rf "$src"
  } > "$out" 2>&1 || { tail -n 5 "$out" >&2; die "FerretDB build failed; see $out"; }
}

provision_redis() {
  command -v redis-server >/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "redis-server missing: run 'sudo apt-get install -y redis-server'"
  log "installing redis-server from Debian"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; } \
    > "$CACHE_DIR/redis-provision.log" 2>&1 \
    || die "apt-get could not install redis-server; see $CACHE_DIR/redis-provision.log"
}

cmd_provision() {
  mkdir -p "$CACHE_DIR"
  local pids=() failed=0
  provision_kafka & pids+=($!)
  provision_ferretdb & pids+=($!)
  provision_redis & pids+=($!)
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || die "provisioning failed (see messages above)"
}

# --- process helpers --------------------------------------------------------

pidfile() { echo "$STACK_DIR/run/$1.pid"; }

running() {  # running NAME -> 0 when its recorded pid is alive
  local f; f="$(pidfile "$1")"
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

require_free_port() {  # require_free_port PORT VARNAME
  if port_open "$1"; then
    die "port $1 is already in use by another process; stop it or choose another port with $2=<port>"
  fi
}

wait_until() {  # wait_until NAME CHECK...: poll CHECK until it succeeds or the timeout
  local name="$1"; shift
  local deadline=$((SECONDS + START_TIMEOUT))
  until "$@"; do
    running "$name" || die "$name exited during start-up; see $STACK_DIR/logs/$name.log"
    [ "$SECONDS" -lt "$deadline" ] || die "$name not healthy after ${START_TIMEOUT}s; see $STACK_DIR/logs/$name.log"
    sleep 0.2
  done
}

spawn() {  # spawn NAME CMD...: start detached in its own session, log and pid recorded
  local name="$1"; shift
  mkdir -p "$STACK_DIR/run" "$STACK_DIR/logs"
  setsid "$@" >>"$STACK_DIR/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$(pidfile "$name")"
}

stop() {  # stop NAME: TERM, then KILL after a grace period; by pid only
  local f; f="$(pidfile "$1")"
  [ -f "$f" ] || return 0
  local pid; pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$1 ignored SIGTERM for 30s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      # gone only once the kernel reaped it and released its ports
      deadline=$((SECONDS + 10))
      while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    fi
    log "stopped $1 (pid $pid)"
  fi
  rm -f "$f"
}

# --- servers ----------------------------------------------------------------

start_redis() {
  if running redis; then return 0; fi
  require_free_port "$REDIS_PORT" EVENTFOLD_REDIS_PORT
  mkdir -p "$STACK_DIR/redis"
  spawn redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$STACK_DIR/redis" \
    --appendonly yes --appendfsync everysec --save "" --protected-mode yes
  wait_until redis redis_ready
  log "redis     redis://127.0.0.1:$REDIS_PORT"
}
redis_ready() { [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

start_ferretdb() {
  if running ferretdb; then return 0; fi
  require_free_port "$MONGO_PORT" EVENTFOLD_MONGO_PORT
  require_free_port "$FERRETDB_DEBUG_PORT" EVENTFOLD_FERRETDB_DEBUG_PORT
  mkdir -p "$STACK_DIR/ferretdb"
  # FerretDB adds journal_mode(wal) (and busy_timeout) to the URL itself; in WAL
  # mode synchronous(normal) syncs at checkpoints instead of at every commit (a
  # crash of the machine, not of the process, can lose the last commits; the
  # database stays consistent). Measured A/B on the same run, ratio of medians:
  # insert_one x1.9-2.2 per second, replace_one x1.2-1.3, a bulk_write of 500
  # ReplaceOne x2.1 faster.
  spawn ferretdb "$FERRETDB_BIN" --handler=sqlite \
    --sqlite-url="file:$STACK_DIR/ferretdb/?_pragma=synchronous(normal)" \
    --listen-addr="127.0.0.1:$MONGO_PORT" --debug-addr="127.0.0.1:$FERRETDB_DEBUG_PORT" \
    --telemetry=disable --log-level=warn --state-dir="$STACK_DIR/ferretdb"
  wait_until ferretdb port_open "$MONGO_PORT"
  log "ferretdb  mongodb://127.0.0.1:$MONGO_PORT"
}

start_kafka() {
  if running kafka; then return 0; fi
  require_free_port "$KAFKA_PORT" EVENTFOLD_KAFKA_PORT
  require_free_port "$KAFKA_CONTROLLER_PORT" EVENTFOLD_KAFKA_CONTROLLER_PORT
  local dir="$STACK_DIR/kafka"
  mkdir -p "$dir"
  cat > "$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=6
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=-1
EOF
  cat > "$dir/log4j.properties" <<'EOF'
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
EOF
  local java=(java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
              "-Dlog4j.configuration=file:$dir/log4j.properties" -cp "$KAFKA_LIBS/*")
  if [ ! -f "$dir/data/meta.properties" ]; then
    log "formatting Kafka KRaft storage"
    "${java[@]}" kafka.tools.StorageTool format --ignore-formatted \
      -t "$(python3 -c 'import base64,uuid;print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')" \
      -c "$dir/server.properties" >> "$STACK_DIR/logs/kafka-format.log" 2>&1 \
      || die "Kafka storage format failed; see $STACK_DIR/logs/kafka-format.log"
  fi
  spawn kafka "${java[@]}" kafka.Kafka "$dir/server.properties"
  wait_until kafka kafka_ready
  log "kafka     127.0.0.1:$KAFKA_PORT (KRaft, Kafka $KAFKA_VERSION)"
}
kafka_ready() { port_open "$KAFKA_PORT" && grep -q "Kafka Server started\|KafkaServer id=.*started\|\[BrokerServer id=1\] Transition from STARTING to STARTED" "$STACK_DIR/logs/kafka.log" 2>/dev/null; }

cmd_up() {
  cmd_provision
  start_redis
  start_ferretdb
  start_kafka
}

# --- the platform's own processes ---------------------------------------------

# Local use: API keys are off unless the caller configured them.
if [ -z "${EVENTFOLD_API_KEYS:-}" ]; then export EVENTFOLD_AUTH_DISABLED="${EVENTFOLD_AUTH_DISABLED:-true}"; fi

# The Python processes get every server address from the same variables.
export EVENTFOLD_KAFKA_PORT="$KAFKA_PORT" EVENTFOLD_MONGO_PORT="$MONGO_PORT" \
  EVENTFOLD_REDIS_PORT="$REDIS_PORT" EVENTFOLD_PRODUCER_PORT="$PRODUCER_PORT" \
  EVENTFOLD_QUERY_PORT="$QUERY_PORT"

http_ok() { python3 -c "import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" 2>/dev/null; }
processor_ready() { grep -q "Worker\]: Ready" "$STACK_DIR/logs/processor.log" 2>/dev/null; }

start_services() {
  [ -x "$VENV_BIN/faust" ] || die "the virtual environment is missing: run 'make run' (it creates .venv)"
  "$VENV_BIN/eventfold" topics >&2
  if ! running processor; then
    : > "$STACK_DIR/logs/processor.log"
    spawn processor "$VENV_BIN/faust" -A stream_processors.app worker --without-web -l info
    wait_until processor processor_ready
  fi
  log "processor running (faust worker, logs in $STACK_DIR/logs/processor.log)"
  if ! running producer-api; then
    require_free_port "$PRODUCER_PORT" EVENTFOLD_PRODUCER_PORT
    spawn producer-api "$VENV_BIN/uvicorn" --factory producers.api:create_app \
      --host 127.0.0.1 --port "$PRODUCER_PORT" --no-access-log
    wait_until producer-api http_ok "http://127.0.0.1:$PRODUCER_PORT/healthz"
  fi
  if ! running query-api; then
    require_free_port "$QUERY_PORT" EVENTFOLD_QUERY_PORT
    spawn query-api "$VENV_BIN/uvicorn" --factory query_api.api:create_app \
      --host 127.0.0.1 --port "$QUERY_PORT" --no-access-log
    wait_until query-api http_ok "http://127.0.0.1:$QUERY_PORT/healthz"
  fi
  [ "${EVENTFOLD_AUTH_DISABLED:-false}" = true ] && \
    log "API keys are disabled for local use (set EVENTFOLD_API_KEYS to require them)"
  cat >&2 <<EOF
[stack] ready:
  producer API  http://127.0.0.1:$PRODUCER_PORT   (POST /v1/events, docs at /docs)
  query API     http://127.0.0.1:$QUERY_PORT   (GET /v1/orders/{id}, docs at /docs)
  kafka         127.0.0.1:$KAFKA_PORT    mongodb  mongodb://127.0.0.1:$MONGO_PORT    redis  redis://127.0.0.1:$REDIS_PORT
  logs          $STACK_DIR/logs/
EOF
}

cmd_run() {
  trap 'echo >&2; log "stopping"; cmd_down; exit 0' INT TERM
  cmd_up
  start_services
  log "running in the foreground; Ctrl-C stops everything"
  while :; do
    for name in kafka ferretdb redis processor producer-api query-api; do
      running "$name" || { log "$name stopped unexpectedly; see $STACK_DIR/logs/$name.log"; cmd_down; exit 1; }
    done
    sleep 1 & wait $!
  done
}

cmd_down() {
  # Reverse order: clients of the servers first (when recorded here), then servers.
  for name in query-api producer-api processor-2 processor kafka ferretdb redis; do stop "$name"; done
  return 0
}

cmd_status() {
  for name in redis ferretdb kafka processor processor-2 producer-api query-api; do
    if running "$name"; then echo "$name: running (pid $(cat "$(pidfile "$name")"))"
    else echo "$name: stopped"; fi
  done
}

case "${1:-}" in
  provision) cmd_provision ;;
  up) cmd_up ;;
  up-all) cmd_up; start_services ;;
  run) cmd_run ;;
  down) cmd_down ;;
  stop) [ -n "${2:-}" ] || die "usage: $0 stop redis|ferretdb|kafka|processor|producer-api|query-api"
        stop "$2" ;;
  status) cmd_status ;;
  *) echo "usage: $0 provision|up|up-all|run|down|stop NAME|status" >&2; exit 2 ;;
esac
