"""Full-text search of stored generations: the query language, and its SQL on each database.

What a user types is parsed here into a small, safe form and never reaches the database as
query syntax: SQLite gets an FTS5 expression in which every word is a quoted string, PostgreSQL
gets ``plainto_tsquery`` / ``phraseto_tsquery`` calls on bound parameters joined by the tsquery
operators. The language (the same on both):

* ``ROMEO love``: rows with both words (``AND`` between them says the same);
* ``love OR hate``: either word; ``OR`` binds tighter than ``AND``, so ``ROMEO love OR hate``
  is ROMEO and (love or hate);
* ``"good night"``: the words next to each other, in this order;
* ``-hate`` or ``NOT hate``: rows without the word (or phrase); a search needs at least one
  word that is not excluded.

Words are letters and digits; every other character (``*``, ``:``, ``(``, quotes that do not
pair) only separates words. Upper or lower case does not matter, and both databases match word
forms ("loves" finds "love": the Porter stemmer on SQLite, PostgreSQL's ``english``
configuration); PostgreSQL also ignores English stop words ("the", "and") in a search.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ClauseElement,
    ColumnElement,
    Executable,
    Select,
    Subquery,
    func,
    literal_column,
    select,
    table,
    text,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import TextClause

from genbot.errors import InvalidRequest
from genbot.storage.tables import Generation

MAX_QUERY_CHARS = 500
MAX_QUERY_TERMS = 32
PG_CONFIG = "english"  # the text-search configuration of the generated column (migration 0009)
FTS_TABLE = "generations_fts"
# What the ORM does not describe (created by migration 0009): left alone by autogenerate.
SEARCH_TABLE_PREFIX = FTS_TABLE
SEARCH_COLUMN = "search"
SEARCH_INDEX = "ix_generations_search"
# A search ranks its newest matches, at most this many: a word in most of 100,000 rows would
# otherwise rank them all (some 300 ms) to keep the best 20. Older matches come after, newest first.
RANK_WINDOW = 2000

_TOKEN = re.compile(r'"([^"]*)"|(\S+)')
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Term:
    """One word, or several that must stand next to each other in this order (a phrase)."""

    words: tuple[str, ...]


@dataclass(frozen=True)
class SearchQuery:
    """A parsed search: every group must match (each group: any of its terms); no excluded term may."""

    groups: tuple[tuple[Term, ...], ...]
    excluded: tuple[Term, ...]


def parse_query(raw: str) -> SearchQuery:
    """The search a user typed, as terms; InvalidRequest for one that is too long or has no words."""
    if len(raw) > MAX_QUERY_CHARS:
        raise InvalidRequest(f"a search may be at most {MAX_QUERY_CHARS} characters, got {len(raw)}")
    groups: list[list[Term]] = []
    excluded: list[Term] = []
    negate = join_next = False
    for match in _TOKEN.finditer(raw.replace("\x00", " ")):
        phrase, bare = match.group(1), match.group(2)
        if phrase is None and bare in ("AND", "OR", "NOT"):
            join_next = join_next or (bare == "OR" and bool(groups))
            negate = negate or bare == "NOT"
            continue
        if phrase is None and bare.startswith("-") and len(bare) > 1:
            negate, bare = True, bare[1:]
        words = tuple(w.lower() for w in _WORD.findall(phrase if phrase is not None else bare))
        if not words:
            continue  # punctuation only: nothing to look for
        term = Term(words)
        if negate:
            excluded.append(term)
        elif join_next:
            groups[-1].append(term)
        else:
            groups.append([term])
        negate = join_next = False
    if sum(len(g) for g in groups) + len(excluded) > MAX_QUERY_TERMS:
        raise InvalidRequest(f"a search may have at most {MAX_QUERY_TERMS} words or phrases")
    if not groups:
        raise InvalidRequest("a search needs at least one word to look for (letters or digits, not only excluded)")
    return SearchQuery(tuple(tuple(g) for g in groups), tuple(excluded))


def owner_token(kind: str, value: str) -> str:
    """The word migration 0010 writes into the FTS5 ``owner`` column for a row's user (``u``) or key (``k``).

    Hex keeps any id one token that the tokenizer cannot split ("a b" and "a-b" stay apart); the
    final digit keeps the Porter stemmer off it. The triggers spell the same in SQL:
    ``'u' || lower(hex(user_id)) || '0'``.
    """
    return kind + value.encode("utf-8").hex() + "0"


def fts5_expression(query: SearchQuery, owners: Sequence[str] = ()) -> str:
    """The FTS5 MATCH expression: every word a quoted string, every operator parenthesised.

    ``owners``: tokens of ``owner_token`` the row must also carry, so FTS5 intersects the search
    with one user's (or key's) rows instead of ranking everyone's.
    """

    def term(t: Term) -> str:
        # Words are letters and digits only, so no quote can end the string early.
        phrase = '"' + " ".join(t.words) + '"'
        # Only a word with a "0" or a non-ASCII letter can become a token of the owner column
        # (they all end in "0"): look for it in the text columns alone. Others skip the column
        # filter, which costs FTS5 a look at every position list.
        if any("0" in w or not w.isascii() for w in t.words):
            return "{prompt output} : " + phrase
        return phrase

    positive = " AND ".join("(" + " OR ".join(term(t) for t in group) + ")" for group in query.groups)
    expression = f"({positive})"
    for t in query.excluded:
        expression = f"({expression} NOT {term(t)})"
    for token in owners:
        expression = f'(owner : "{token}" AND {expression})'
    return expression


def pg_tsquery(query: SearchQuery) -> ColumnElement[Any]:
    """The tsquery on PostgreSQL, built from bound parameters (never parsed from the user's text)."""

    def term(t: Term) -> ColumnElement[Any]:
        maker = func.plainto_tsquery if len(t.words) == 1 else func.phraseto_tsquery
        return maker(literal_column(f"'{PG_CONFIG}'::regconfig"), " ".join(t.words))

    combined: ColumnElement[Any] | None = None
    for group in query.groups:
        either = term(group[0])
        for t in group[1:]:
            either = either.op("||")(term(t))
        combined = either if combined is None else combined.op("&&")(either)
    assert combined is not None  # parse_query refuses a query without a group
    for t in query.excluded:
        combined = combined.op("&&")(func.tsquery_not(term(t)))
    return combined


@dataclass(frozen=True)
class Search:
    """A parsed search as SQL for one database: what selects the matching rows, and their rank."""

    dialect: str
    match: ColumnElement[bool] | TextClause
    rank: ColumnElement[float]  # lower is better
    newest: ColumnElement[int]  # the id to walk newest first (FTS5's rowid on SQLite)

    def rows(self, entity: Any, *conditions: ColumnElement[bool]) -> Select[Any]:
        """``entity`` of the matching generations that also meet ``conditions``."""
        statement = select(entity).where(self.match, *conditions)
        if self.dialect == "sqlite":
            # FTS5 first: it hands out the matches, generations is looked up by id for the filters.
            # The "+" keeps SQLite from the other order (a user's rows by the user_id index, each
            # then a whole FTS5 query of its own: 200 ms for a rare word).
            matched = Generation.id == literal_column(f"+{FTS_TABLE}.rowid")
            statement = statement.select_from(table(FTS_TABLE)).join(Generation, matched)
        return statement


def compile_search(dialect: str, raw: str, *, user_id: str | None = None, api_key_id: str | None = None) -> Search:
    """The SQL of a search; ``user_id`` / ``api_key_id`` narrow the FTS5 lookup to that owner's rows.

    The narrowing is for speed only: callers still filter on the owner columns themselves, which
    is what keeps one user's search away from another's rows.
    """
    query = parse_query(raw)
    if dialect == "sqlite":
        owners = [owner_token("u", user_id)] if user_id is not None else []
        owners += [owner_token("k", api_key_id)] if api_key_id is not None else []
        match = text(f"{FTS_TABLE} MATCH :fts_query").bindparams(fts_query=fts5_expression(query, owners))
        # bm25() is already "lower is better"; the owner column weighs nothing in it.
        bm25: ColumnElement[float] = literal_column(f"bm25({FTS_TABLE}, 1.0, 1.0, 0.0)")
        rowid: ColumnElement[int] = literal_column(f"{FTS_TABLE}.rowid")
        return Search(dialect, match, bm25, rowid)
    tsquery = pg_tsquery(query)
    column: ColumnElement[Any] = literal_column(f"generations.{SEARCH_COLUMN}")
    return Search(dialect, column.op("@@")(tsquery), -func.ts_rank(column, tsquery), Generation.id.expression)


async def ranked_window(session: AsyncSession, search: Search, *conditions: ColumnElement[bool]) -> Subquery:
    """``(id, rank)`` of the newest ``RANK_WINDOW`` matches meeting ``conditions``: the rows ranked.

    Every match when there are at most that many. The statement differs by how common the
    search is, its rows do not: the newest matches are found by walking the ids down for a
    search that matches a large share of the rows, and by the index of the words (then sorting
    the matches by id) for one that matches few.
    """
    ranked = search.rows(Generation.id.label("id"), *conditions).add_columns(search.rank.label("rank"))
    if await _walk_newest(session, search, conditions):
        return ranked.order_by(search.newest.desc()).limit(RANK_WINDOW).subquery("ranked")
    if search.dialect == "sqlite":
        return ranked.subquery("ranked")  # at most RANK_WINDOW matches: no order or limit to apply
    # "+ 0": not the primary key's order any more, so PostgreSQL does not walk the ids down.
    return ranked.order_by((Generation.id + 0).desc()).limit(RANK_WINDOW).subquery("ranked")


async def _walk_newest(session: AsyncSession, search: Search, conditions: Sequence[ColumnElement[bool]]) -> bool:
    """Whether the newest matches are best found by walking the ids down (the search is common)."""
    if search.dialect == "sqlite":
        # FTS5 streams matches in rowid order cheaply, but walks them backwards more slowly than
        # forwards: only worth it when there are more than the window holds. Counted in FTS5
        # alone: the other filters can only make fewer, and then the walk finds them all too.
        rowid: ColumnElement[int] = literal_column(f"{FTS_TABLE}.rowid")
        first = select(rowid).select_from(table(FTS_TABLE)).where(search.match).limit(RANK_WINDOW + 1).subquery()
        return (await session.scalar(select(func.count()).select_from(first)) or 0) > RANK_WINDOW
    # The planner's own estimates (from ANALYZE's statistics of the words), of the matches and
    # of all rows, in one plan. The walk reads about window × rows / matches rows, the word
    # index about the matches.
    both = union_all(search.rows(Generation.id, *conditions), select(Generation.id))
    plan = await session.scalar(_Explain(both))
    node = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    while len(node.get("Plans", [])) == 1:  # a Gather or the like above the Append
        node = node["Plans"][0]
    if len(node.get("Plans", [])) != 2:
        return False  # a plan of another shape: the word index finds the same rows, only slower when common
    matches, rows = (float(part["Plan Rows"]) for part in node["Plans"])
    return matches * matches > RANK_WINDOW * max(rows, 1.0)


class _Explain(Executable, ClauseElement):
    """``EXPLAIN (FORMAT JSON)`` of a statement, with its bound parameters (PostgreSQL)."""

    inherit_cache = False

    def __init__(self, statement: Executable) -> None:
        self.statement = statement


@compiles(_Explain, "postgresql")
def _compile_explain(element: _Explain, compiler: Any, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + str(compiler.process(element.statement, **kw))


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic ``include_name`` hook: leave the search objects of migrations 0009 and 0010 out of comparisons."""
    if type_ == "table" and name is not None and name.startswith(SEARCH_TABLE_PREFIX):
        return False
    if type_ == "column" and name == SEARCH_COLUMN and parent_names.get("table_name") == "generations":
        return False
    return not (type_ == "index" and name == SEARCH_INDEX)
