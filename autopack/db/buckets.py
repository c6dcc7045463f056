"""The deliverable-count bucket, defined once: in Python and as the SQL expression beside it.

Buckets are `0`, `1`, `2-5` and `6+`. A null or negative count (bad data from elsewhere) is
`unknown`: it is not zero deliverables, so it is never counted with the empty phases.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import sqlalchemy as sa

UNKNOWN_BUCKET: Final = "unknown"
"""The bucket of a null or negative deliverable count."""
DELIVERABLE_BUCKETS: Final[tuple[str, ...]] = ("0", "1", "2-5", "6+")
"""The buckets of known counts, in count order."""


def deliverable_bucket(count: int | None) -> str:
    """`0`, `1`, `2-5`, `6+`, or `unknown` for a null or negative count."""
    if count is None or count < 0:
        return UNKNOWN_BUCKET
    if count == 0:
        return "0"
    if count == 1:
        return "1"
    if count <= 5:
        return "2-5"
    return "6+"


def deliverable_bucket_sql(count: sa.ColumnElement[int]) -> sa.ColumnElement[str]:
    """deliverable_bucket() as a SQL expression over an integer column."""
    import sqlalchemy as sa  # lazily: the plain-sqlite3 readers import this module too

    return sa.case(
        (count.is_(None), UNKNOWN_BUCKET),
        (count < 0, UNKNOWN_BUCKET),
        (count == 0, "0"),
        (count == 1, "1"),
        (count <= 5, "2-5"),
        else_="6+",
    )
