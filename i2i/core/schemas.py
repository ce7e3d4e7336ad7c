"""Arrow schemas of the tables in CONTRACTS.md, and validation that says which rows and fields are wrong."""
from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

TIMESTAMP = pa.timestamp("ms", tz="UTC")
ACTIONS = ("view", "click")
SPLITS = ("train", "val", "test")

NOTES = pa.schema(
    [
        pa.field("note_id", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("topics", pa.list_(pa.string())),
        pa.field("content", pa.string()),
        pa.field("image", pa.binary()),
        pa.field("published_at", TIMESTAMP),
    ]
)
EVENTS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("note_id", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("ts", TIMESTAMP, nullable=False),
    ]
)
SCORES = pa.schema(
    [
        pa.field("src_note_id", pa.string(), nullable=False),
        pa.field("dst_note_id", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("users", pa.int64(), nullable=False),
    ]
)
RELATED = pa.schema(
    [
        pa.field("src_note_id", pa.string(), nullable=False),
        pa.field("dst_note_id", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
    ]
)
PAIRS = pa.schema(
    [
        pa.field("query_note_id", pa.string(), nullable=False),
        pa.field("target_note_id", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ]
)
DEAD_LETTER = pa.schema(
    [
        pa.field("raw", pa.string(), nullable=False),  # the record as it arrived (JSON text)
        pa.field("reason", pa.string(), nullable=False),
        pa.field("source", pa.string()),  # file or step the record came from
    ]
)


def embeddings_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("note_id", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("model_version", pa.string(), nullable=False),
            pa.field("embedded_at", TIMESTAMP, nullable=False),
        ]
    )


TABLES: dict[str, pa.Schema] = {
    "notes": NOTES,
    "events": EVENTS,
    "scores": SCORES,
    "related": RELATED,
    "pairs": PAIRS,
    "dead_letter": DEAD_LETTER,
}

# Columns whose values must be non-empty strings, and columns restricted to a set of values.
NON_EMPTY = {
    "notes": ["note_id"],
    "events": ["user_id", "note_id"],
    "scores": ["src_note_id", "dst_note_id"],
    "related": ["src_note_id", "dst_note_id"],
    "pairs": ["query_note_id", "target_note_id"],
    "embeddings": ["note_id", "model_version"],
}
ALLOWED = {"events": {"action": ACTIONS}, "pairs": {"split": SPLITS}}
UNIQUE = {"notes": ["note_id"]}


@dataclass
class FieldError:
    field: str
    reason: str
    rows: list[int]  # first offending row indices (capped)
    count: int

    def __str__(self) -> str:
        shown = ", ".join(map(str, self.rows))
        more = f" (+{self.count - len(self.rows)} more)" if self.count > len(self.rows) else ""
        return f"{self.field}: {self.reason} at rows [{shown}]{more}" if self.rows else f"{self.field}: {self.reason}"


@dataclass
class ValidationReport:
    table: str
    num_rows: int
    errors: list[FieldError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def __str__(self) -> str:
        if self.ok:
            return f"{self.table}: {self.num_rows} rows conform"
        return f"{self.table}: " + "; ".join(str(e) for e in self.errors)


MAX_ROWS_SHOWN = 10


def _rows(mask: pa.Array | pa.ChunkedArray) -> tuple[list[int], int]:
    if len(mask) == 0:  # indices_nonzero crashes on an empty chunked array
        return [], 0
    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks()
    indices = pc.indices_nonzero(pc.fill_null(mask, True)).to_pylist()
    return indices[:MAX_ROWS_SHOWN], len(indices)


def _type_compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    if actual.equals(expected):
        return True
    if pa.types.is_timestamp(expected) and pa.types.is_timestamp(actual):
        return actual.tz is not None  # any unit, but it must be zone-aware
    if pa.types.is_string(expected):
        return pa.types.is_large_string(actual) or pa.types.is_string_view(actual)
    if pa.types.is_binary(expected):
        return pa.types.is_large_binary(actual) or pa.types.is_binary_view(actual)
    if pa.types.is_list(expected) and (pa.types.is_list(actual) or pa.types.is_large_list(actual)):
        return _type_compatible(actual.value_type, expected.value_type)
    if pa.types.is_fixed_size_list(expected) and pa.types.is_fixed_size_list(actual):
        return actual.list_size == expected.list_size and _type_compatible(actual.value_type, expected.value_type)
    return False


def validate(table: pa.Table, name: str, schema: pa.Schema | None = None) -> ValidationReport:
    """Checks columns, types, nulls, empty ids, allowed values and uniqueness of one table."""
    schema = schema if schema is not None else TABLES[name]
    report = ValidationReport(name, table.num_rows)
    for expected in schema:
        if expected.name not in table.column_names:
            report.errors.append(FieldError(expected.name, "missing column", [], 0))
            continue
        column = table.column(expected.name)
        if not _type_compatible(column.type, expected.type):
            report.errors.append(FieldError(expected.name, f"type {column.type}, expected {expected.type}", [], 0))
            continue
        if not expected.nullable and column.null_count:
            rows, count = _rows(pc.is_null(column))
            report.errors.append(FieldError(expected.name, "null value", rows, count))
    present = {f.name for f in schema} & set(table.column_names)
    for column_name in NON_EMPTY.get(name, []):
        if column_name in present and pa.types.is_string(table.schema.field(column_name).type):
            rows, count = _rows(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(table.column(column_name))), 0))
            if count:
                report.errors.append(FieldError(column_name, "empty id", rows, count))
    for column_name, values in ALLOWED.get(name, {}).items():
        if column_name in present:
            bad = pc.invert(pc.is_in(table.column(column_name), value_set=pa.array(values)))
            rows, count = _rows(bad)
            if count:
                report.errors.append(FieldError(column_name, f"value not in {list(values)}", rows, count))
    for column_name in UNIQUE.get(name, []):
        if column_name in present:
            counts = pc.value_counts(table.column(column_name))
            duplicated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
            if len(duplicated):
                rows, count = _rows(pc.is_in(table.column(column_name), value_set=duplicated))
                report.errors.append(FieldError(column_name, "duplicate id", rows, count))
    return report


def conform(table: pa.Table, name: str, schema: pa.Schema | None = None) -> pa.Table:
    """Validates, then casts to the exact contract schema (column order and types); raises on errors."""
    from i2i.core.errors import InputError

    schema = schema if schema is not None else TABLES[name]
    report = validate(table, name, schema)
    if not report.ok:
        raise InputError(str(report))
    return table.select(schema.names).cast(schema)
