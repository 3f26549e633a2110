"""The answers database: one row per answer, through SQLAlchemy.

A SQLite file by default; any SQLAlchemy URL (PostgreSQL, MySQL) for a study read from
several places. Each row carries the study's content hash, so answers to two versions of a
study never mix, and a unique constraint on (study, reader, item) makes the database itself
refuse a second answer to the same item, whichever server process receives it. Correctness
is never stored: it is computed from the study's key when the report is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    func,
    insert,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError

from cfxray.errors import UserError

MAX_READER, MAX_ITEM, MAX_ANSWER = 64, 32, 32

metadata = MetaData()
answers = Table(
    "study_answers", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_sha256", String(64), nullable=False, index=True),
    Column("study_name", String(200), nullable=False),
    Column("reader", String(MAX_READER), nullable=False),
    Column("item", String(MAX_ITEM), nullable=False),
    Column("task", String(32), nullable=False),
    Column("answer", String(MAX_ANSWER), nullable=False),
    Column("elapsed_ms", Integer, nullable=False),
    Column("answered_utc", DateTime(timezone=True), nullable=False),
    UniqueConstraint("study_sha256", "reader", "item", name="one_answer_per_reader_and_item"),
    CheckConstraint("elapsed_ms >= 0", name="elapsed_not_negative"),
)


class Duplicate(Exception):
    """The reader has already answered this item; the stored answer stands."""


@dataclass(frozen=True)
class Answer:
    study_sha256: str
    study_name: str
    reader: str
    item: str
    task: str
    answer: str
    elapsed_ms: int


def safe_url(url: str) -> str:
    """The URL without its password, for logs and lineage records."""
    return make_url(url).render_as_string(hide_password=True)


class AnswerStore:
    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise UserError(f"not a database URL: {url!r} ({exc})") from None
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "",
                                                                             ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.url = safe_url(url)
        try:
            self.engine = create_engine(parsed)
            metadata.create_all(self.engine)
        except (ArgumentError, OperationalError, ModuleNotFoundError) as exc:
            raise UserError(f"cannot open the answers database {self.url}: {exc}") from None

    def add(self, answer: Answer) -> None:
        row = {**answer.__dict__, "answered_utc": datetime.now(UTC)}
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(answers).values(**row))
        except IntegrityError:
            raise Duplicate(f"reader {answer.reader!r} has already answered {answer.item}") \
                from None

    def answered(self, study_sha256: str, reader: str) -> set[str]:
        query = select(answers.c.item).where(answers.c.study_sha256 == study_sha256,
                                             answers.c.reader == reader)
        with self.engine.connect() as connection:
            return set(connection.scalars(query))

    def rows(self, study_sha256: str) -> list[dict[str, Any]]:
        """Every answer to one study, oldest first."""
        query = select(answers).where(answers.c.study_sha256 == study_sha256) \
            .order_by(answers.c.id)
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def other_versions(self, study_name: str, study_sha256: str) -> dict[str, int]:
        """Answers stored under the same study name but another content hash."""
        query = select(answers.c.study_sha256, func.count()).where(
            answers.c.study_name == study_name, answers.c.study_sha256 != study_sha256
        ).group_by(answers.c.study_sha256)
        with self.engine.connect() as connection:
            return {sha: int(n) for sha, n in connection.execute(query)}

    def close(self) -> None:
        self.engine.dispose()
