"""The changes ``stack/stack.sh`` makes to FerretDB v1.24.2's module source before
building it, in the order they are applied (``PATCHES``).

Each patch checks that the source text it changes is there exactly as expected
and exits with a message otherwise, so a changed upstream fails the build loudly
instead of building something else. The binary's cache name in stack.sh lists
the patches: change it with them.

Run: ``python3 stack/ferretdb_patches.py <module source dir>``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


def id_lookups(root: Path) -> None:
    """FerretDB 1.24's SQLite backend looks documents up by _id with the expression
    _ferretdb_sjson->'$._id', but indexes _id as _ferretdb_sjson->"_id" (the
    string '_id'). SQLite uses an expression index only for the same expression,
    so every find, update and delete by _id scanned the whole table, parsing each
    document's JSON: a write got slower with every document (measured: 87% of
    FerretDB's CPU in SQLite's JSON parser). Both mean the same path; the lookup
    is made to use the index's form."""
    path = root / "internal/backends/sqlite/metadata/metadata.go"
    text = path.read_text()
    old = "IDColumn = DefaultColumn + \"->'$._id'\""
    new = "IDColumn = DefaultColumn + \"->'_id'\""
    if text.count(old) != 1:
        sys.exit(f"{path}: the _id column expression to patch is not as expected")
    path.write_text(text.replace(old, new))


def update_close(root: Path) -> None:
    """FerretDB 1.24's update command (update, bulk_write's updates and replaces)
    defers closing each statement's query iterator to the end of the whole
    command (`defer closer.Close()` inside its per-statement loop). A statement
    limited to one document (multi: false: every ReplaceOne and UpdateOne) stops
    reading after its match without draining the rows, so it keeps a pooled
    SQLite connection; the pool holds 100, and the 100th matched statement of one
    command waits for a connection forever (the command, and then the database,
    hang). The closer is closed right after its statement's document is updated."""
    argument = str(root / "internal/handler/msg_update.go")
    import sys
    from pathlib import Path

    path = Path(argument)
    text = path.read_text()
    deferred = "\t\tcloser := iterator.NewMultiCloser()\n\t\tdefer closer.Close()\n"
    update = '\t\tresult, err := common.UpdateDocument(ctx, c, "update", iter, &u)\n'
    closed = "\t\tcloser.Close() // eventfold: release the statement's connection now\n"
    if (
        text.count(deferred) != 1
        or text.count(update) != 1
        or text.index(deferred) > text.index(update)
    ):
        sys.exit(f"{path}: the deferred closer / UpdateDocument call to patch is not as expected")
    text = text.replace(deferred, "\t\tcloser := iterator.NewMultiCloser()\n")
    text = text.replace(update, update + closed)
    if "defer closer.Close()" in text or text.count(closed) != 1:
        sys.exit(f"{path}: patch not applied as expected")
    path.write_text(text)


def id_in(root: Path) -> None:
    """FerretDB 1.24's SQLite backend pushes down to SQL only a filter on one _id
    value; `{_id: {$in: [...]}}` (how a batch reads the documents it changes)
    fetched and decoded every document of the collection, so reading a batch got
    slower with every document stored. The query is made to select those ids
    with `WHERE <_id> IN (...)` on the _id index; FerretDB still applies the
    whole filter to what it returns, so the result is the same. (`explain` is
    changed alike, so it shows the plan used.)"""
    argument = str(root / "internal/backends/sqlite/collection.go")
    import sys
    from pathlib import Path

    path = Path(argument)
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


def batched_updates(root: Path) -> None:
    """FerretDB 1.24's update command (bulk_write's ReplaceOne and UpdateOne) runs
    each statement alone: a query for its document, then a transaction of its
    own to write it. A bulk of ReplaceOne({_id: X}) cost ~2 ms a document, 4-5x an
    insert. A run of statements that each select one document by a string or
    ObjectID _id (and any other conditions; not multi) is instead read with one
    `{_id: {$in: [...]}}` query (pushed down by id_in) and its
    changed documents written with one UpdateAll (one transaction). Each statement
    is still applied by FerretDB's own common.UpdateDocument, to its document as
    the statements before it left it: same filter, matching, errors and counts. An
    upsert of a missing document inserts at once, after the writes before it; on
    an error, the writes before it are made, then the command fails (as before).
    Up to 1,000 statements a batch. Measured A/B (2.6 KB documents, ratios of
    medians of 11 rounds): bulk_write of 400 / 1,000 ReplaceOne x1.9 / x1.8
    faster, now about as costly as a find of those documents. A batch's
    read-modify-write is no more atomic than each statement's was (FerretDB issue
    #3040; Eventfold's writers take turns under a lock). Also: an upsert's `index`
    is its statement's index (as MongoDB reports it), not the count of upserts
    before it."""
    argument = str(root / "internal/handler")
    import sys
    from pathlib import Path

    folder = Path(argument)
    path = folder / "msg_update.go"
    text = path.read_text()
    loop = "\tfor _, u := range params.Updates {\n\t\tc, err := db.Collection(params.Collection)\n"
    query = "\t\tvar qp backends.QueryParams\n\t\tif !h.DisablePushdown {\n\t\t\tqp.Filter = u.Filter\n\t\t}\n"
    index = '\t\t\t\t"index", int32(upserted.Len()),\n'
    if any(text.count(s) != 1 for s in (loop, query, index)) or text.index(loop) > text.index(
        query
    ):
        sys.exit(f"{path}: the update loop to batch is not as expected")
    text = text.replace(
        loop,
        """\tfor idx := 0; idx < len(params.Updates); idx++ { // eventfold: by index, to batch runs
\t\tu := params.Updates[idx]

\t\tc, err := db.Collection(params.Collection)
""",
    )
    text = text.replace(
        query,
        """\t\t// eventfold: a run of statements each selecting one document by _id, as one batch
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

"""
        + query,
    )
    text = text.replace(
        index,
        '\t\t\t\t"index", int32(idx), // eventfold: the statement\'s index, as MongoDB reports it\n',
    )
    path.write_text(text)

    batch = folder / "msg_update_eventfold_batch.go"
    if batch.exists():
        sys.exit(f"{batch}: already exists")
    batch.write_text(r"""package handler

// eventfold: update statements selecting one document by _id, applied as one batch
// (see batched_updates in Eventfold's stack/ferretdb_patches.py).

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
""")


def exact_noop(root: Path) -> None:
    """FerretDB 1.24 tells a no-op update (not written, not counted in nModified)
    with comparisons that are not exact. MongoDB leaves a document alone when a
    replacement is binary-equal to it, and a $set when the new value is
    binary-equal to the old one (same field names, order, types and values).
    FerretDB also found equal a replacement changing only number types
    ({f: 1.0} -> {f: 1}: neither written nor counted) and a $set of an embedded
    document with other field names but the same values ({a: 1} -> {b: 1}:
    dropped). Both comparisons are made exact."""
    argument = str(root / "internal/handler/common")
    import sys
    from pathlib import Path

    folder = Path(argument)
    path = folder / "update.go"
    text = path.read_text()
    replaced = "\tif types.Compare(doc, update) == types.Equal {\n\t\treturn false, nil\n\t}\n"
    same = "\t\tif types.Identical(setValue, docValue) {\n"
    if text.count(replaced) != 1 or text.count(same) != 1:
        sys.exit(f"{path}: the no-op checks to make exact are not as expected")
    text = text.replace(
        replaced,
        replaced.replace("types.Compare(doc, update) == types.Equal", "exactlySame(doc, update)"),
    )
    text = text.replace(
        same, "\t\tif exactlySame(setValue, docValue) { // eventfold: field names compared too\n"
    )
    path.write_text(text)

    helper = folder / "eventfold_same.go"
    if helper.exists():
        sys.exit(f"{helper}: already exists")
    helper.write_text(r"""package common

// eventfold: see exact_noop in Eventfold's stack/ferretdb_patches.py.

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
""")


def id_and_more(root: Path) -> None:
    """FerretDB 1.24's SQLite backend pushes an _id condition down to SQL only when it
    is the whole filter: a conditional write such as
    ReplaceOne({_id: X, _rev: R}, doc) (and any find, count or delete of one _id
    with other conditions) read and decoded every document of the collection. The
    _id equality of such a filter selects that _id on the _id index. Every caller
    applies the whole filter to what the query returns (find, getMore, update,
    delete, findAndModify, count, distinct, aggregate's $match), and limits are
    pushed down only without a filter, so the results are the same."""
    argument = str(root / "internal/backends/sqlite/collection.go")
    import sys
    from pathlib import Path

    path = Path(argument)
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
    if (
        text.count(anchor) != 1
        or text.count(explain) != 1
        or text.count("// eventfold: {_id: {$in: [...]}}") != 2
    ):
        sys.exit(f"{path}: the query's where clause to extend is not as expected (id_in first)")
    text = text.replace(anchor, pushdown + anchor)  # the query
    text = text.replace(explain, pushdown + explain)  # and its explain, which tests check
    path.write_text(text)


def unread_replaces(root: Path) -> None:
    """A run of statements that only replace documents by _id (bulk_write of
    ReplaceOne({_id: X}, doc), no other condition, no upsert: how Eventfold's batch
    writer rewrites the documents it wrote last) is written with one UpdateAll
    without reading the documents first (``batched_updates`` read and decoded each
    of them to apply the replacement to it). A replacement does not depend on the
    document it replaces: the new document is its _id followed by the
    replacement's fields, as FerretDB builds it. Measured with pprof on the
    benchmark stack, bulk_write of 1,100 ReplaceOne of 2.7 KB documents: reading
    and decoding the stored documents was 37% of FerretDB's CPU.

    The counts: matched and modified are both the documents updated, so a
    replacement identical to the stored document counts as modified (MongoDB
    counts it in n only); nothing in Eventfold reads nModified. A run with any
    other statement (an operator, an upsert, another condition), or a replacement
    whose _id is not the filter's or whose document is invalid, is applied as
    before, each statement to the document as the ones before left it."""
    argument = str(root / "internal/handler/msg_update_eventfold_batch.go")
    import sys
    from pathlib import Path

    path = Path(argument)
    text = path.read_text()
    head = (
        "func updateBatched(ctx context.Context, c backends.Collection, updates []common.Update, "
        "idx int, upserted *types.Array) (int32, int32, error) {\n"
    )
    if text.count(head) != 1:
        sys.exit(f"{path}: updateBatched to extend is not as expected (batched_updates first)")
    fast = """\t// eventfold: replacements by _id alone are written without reading the documents
\tif docs, ok := unreadReplacements(updates); ok {
\t\tres, err := c.UpdateAll(ctx, &backends.UpdateAllParams{Docs: docs})
\t\tif err != nil {
\t\t\treturn 0, 0, lazyerrors.Error(err)
\t\t}

\t\treturn res.Updated, res.Updated, nil
\t}

"""
    text = text.replace(head, head + fast)
    text += """
// unreadReplacements returns the documents a run of replacements writes, if every
// statement replaces the document its filter selects by _id alone (no other
// condition, no upsert) with a valid document whose _id, if any, is the filter's.
func unreadReplacements(updates []common.Update) ([]*types.Document, bool) {
\tdocs := make([]*types.Document, 0, len(updates))

\tfor i := range updates {
\t\tu := &updates[i]

\t\tid, _, ok := updateBatchKey(u)
\t\tif !ok || u.HasUpdateOperators || u.Upsert || u.Filter.Len() != 1 {
\t\t\treturn nil, false
\t\t}

\t\tdoc := must.NotFail(types.NewDocument("_id", id))
\t\tvalues := u.Update.Values()

\t\tfor j, k := range u.Update.Keys() {
\t\t\tif k != "_id" {
\t\t\t\tdoc.Set(k, values[j])
\t\t\t} else if !types.Identical(values[j], id) {
\t\t\t\treturn nil, false
\t\t\t}
\t\t}

\t\tif doc.ValidateData() != nil {
\t\t\treturn nil, false
\t\t}

\t\tdocs = append(docs, doc)
\t}

\treturn docs, true
}
"""
    path.write_text(text)


PATCHES: tuple[Callable[[Path], None], ...] = (
    id_lookups,
    update_close,
    id_in,
    batched_updates,
    exact_noop,
    id_and_more,
    unread_replaces,
)


if __name__ == "__main__":
    for patch in PATCHES:
        patch(Path(sys.argv[1]))
