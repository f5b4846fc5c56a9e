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

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, func, literal_column, select, table, text

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


def fts5_expression(query: SearchQuery) -> str:
    """The FTS5 MATCH expression: every word a quoted string, every operator parenthesised."""

    def term(t: Term) -> str:
        # Words are letters and digits only, so no quote can end the string early.
        return '"' + " ".join(t.words) + '"'

    positive = " AND ".join("(" + " OR ".join(term(t) for t in group) + ")" for group in query.groups)
    expression = f"({positive})"
    for t in query.excluded:
        expression = f"({expression} NOT {term(t)})"
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


def ranked_ids(dialect: str, raw: str) -> Select[int, float]:
    """``(id, rank)`` of the generations matching a search, best first (lower rank is better)."""
    query = parse_query(raw)
    if dialect == "sqlite":
        # bm25() is already "lower is better"; rowid is the generation's id (content_rowid).
        match = text(f"{FTS_TABLE} MATCH :fts_query").bindparams(fts_query=fts5_expression(query))
        rowid: ColumnElement[int] = literal_column(f"{FTS_TABLE}.rowid")
        bm25: ColumnElement[float] = literal_column(f"bm25({FTS_TABLE})")
        return select(rowid.label("id"), bm25.label("rank")).select_from(table(FTS_TABLE)).where(match)
    tsquery = pg_tsquery(query)
    column: ColumnElement[Any] = literal_column(f"generations.{SEARCH_COLUMN}")
    rank = -func.ts_rank(column, tsquery)
    return select(Generation.id.label("id"), rank.label("rank")).where(column.op("@@")(tsquery))


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic ``include_name`` hook: leave the search objects of migration 0009 out of comparisons."""
    if type_ == "table" and name is not None and name.startswith(SEARCH_TABLE_PREFIX):
        return False
    if type_ == "column" and name == SEARCH_COLUMN and parent_names.get("table_name") == "generations":
        return False
    return not (type_ == "index" and name == SEARCH_INDEX)
