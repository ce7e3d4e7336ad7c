"""Property-based fuzzing of event records: whatever arrives, every record ends up either as a
valid event or as a dead letter with a reason (valid + dead-lettered == input), and no record
crashes the reader, the Beam read step or the ``i2i cooccur`` job.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
from hypothesis import HealthCheck, example, given, settings, strategies as st

from i2i.core.io import read_table
from i2i.core.records import DeadLetter, Event, dead_letters_to_table, events_to_table, parse_event
from pipelines.read import read_events

UTC = dt.timezone.utc
NOT_SURROGATE = st.characters(blacklist_categories=("Cs",))

# Lone surrogates included: a JSON line can carry them as escapes ("\\ud800"), and Arrow refuses them.
ANY_CHARACTER = st.characters(exclude_categories=())
good_ids = st.text(ANY_CHARACTER, min_size=1, max_size=12).filter(str.strip)
good_times = st.one_of(st.integers(min_value=0, max_value=2_000_000_000_000),
                       st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()))
wild_ids = st.one_of(
    st.sampled_from(["", " ", "\t", "\u3000", "\ud800"]), st.text(ANY_CHARACTER, max_size=12),
    st.integers(), st.floats(), st.booleans(), st.none(), st.lists(st.text(max_size=3), max_size=2),
)
wild_actions = st.one_of(st.sampled_from(["VIEW", "Click", "like", "", " click"]), st.text(max_size=6),
                         st.integers(), st.none(), st.lists(st.just("click"), max_size=1))
wild_times = st.one_of(
    st.integers(min_value=-2**70, max_value=2**70),  # far outside any calendar
    st.floats(allow_nan=True, allow_infinity=True),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["2025-02-30T00:00:00", "-5", "", "Z", "9999-12-31T23:59:59.999+00:00",
                     "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "99999999999999999999",
                     "-99999999999999999999", "1e12", "²", "٣", "2025-01-01T00:00:00+25:00"]),
    st.text(max_size=25), st.none(), st.booleans(), st.lists(st.integers(), max_size=2),
)
WILD = {"user_id": wild_ids, "note_id": wild_ids, "action": wild_actions, "ts": wild_times}


@st.composite
def records(draw) -> dict:
    """A valid event with each field kept, replaced by something odd, or dropped."""
    record = {"user_id": draw(good_ids), "note_id": draw(good_ids),
              "action": draw(st.sampled_from(["view", "click"])), "ts": draw(good_times)}
    for name in list(record):
        fate = draw(st.sampled_from(["keep", "keep", "keep", "replace", "drop"]))
        if fate == "replace":
            record[name] = draw(WILD[name])
        elif fate == "drop":
            del record[name]
    if draw(st.booleans()):
        record[draw(st.text(max_size=6))] = draw(st.text(max_size=6))
    return record


json_lines = st.one_of(
    records().map(json.dumps),
    st.text(NOT_SURROGATE, max_size=40).filter(lambda s: "\n" not in s),  # anything at all, mostly not JSON
    st.sampled_from(["[]", "null", "1", '"a string"', "{", '{"user_id": "u1"', "[{}]"]),
    st.lists(st.integers(), max_size=3).map(json.dumps),
)


def counted_lines(lines: list[str]) -> int:
    """Records a reader must account for: lines with something besides ASCII whitespace."""
    return sum(1 for line in lines if line.encode("utf-8").strip())


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))


VALID = {"user_id": "u1", "note_id": "n1", "action": "click", "ts": 1_700_000_000_000}
# Found by this test: each was accepted as valid and then crashed the table build of its batch.
REGRESSIONS = [{**VALID, "user_id": "\ud800"}, {**VALID, "ts": 2**63}, {**VALID, "ts": 1e30},
               {**VALID, "ts": 253402300800000.0}, {**VALID, "ts": -2**62}, {**VALID, "ts": "99999999999999999999"}]


@settings(max_examples=500, deadline=None)
@given(st.one_of(records(), json_lines, st.binary(max_size=30), st.datetimes(), st.integers()))
@example(REGRESSIONS[0])
@example(REGRESSIONS[1])
@example(REGRESSIONS[2])
@example(REGRESSIONS[3])
@example(REGRESSIONS[4])
@example(REGRESSIONS[5])
@example(json.dumps(REGRESSIONS[0]))
def test_every_record_parses_to_an_event_or_a_dead_letter_that_fits_its_table(record):
    parsed = parse_event(record, source="fuzz")
    if isinstance(parsed, Event):
        table = events_to_table([parsed])
        assert table.num_rows == 1
        assert table.column("ts").cast(pa.int64())[0].as_py() == parsed.ts_ms
        table.to_pylist()  # every value converts back, times included
    else:
        assert isinstance(parsed, DeadLetter) and parsed.reason
        assert dead_letters_to_table([parsed]).num_rows == 1


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(json_lines, max_size=30))
@example(lines=[json.dumps(VALID)] + [json.dumps(record) for record in REGRESSIONS])
def test_local_reader_accounts_for_every_line(tmp_path, lines):
    path = tmp_path / "events.jsonl"
    write_lines(path, lines)
    valid, dead = read_events(path)
    assert valid.num_rows + dead.num_rows == counted_lines(lines)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.lists(json_lines, min_size=1, max_size=25), min_size=1, max_size=3))
def test_cooccur_job_accounts_for_every_record_and_never_crashes(tmp_path_factory, files):
    from pipelines.cooccur import run

    root = tmp_path_factory.mktemp("fuzz")
    for number, lines in enumerate(files):
        write_lines(root / "events" / f"part-{number}.jsonl", lines)
    expected = sum(counted_lines(lines) for lines in files)
    local_valid = sum(read_events(root / "events" / f"part-{n}.jsonl")[0].num_rows for n in range(len(files)))
    summary = run(["--events", str(root / "events"), "--out", str(root / "out"), "--runner=DirectRunner"])
    counts = summary["counts"]
    assert counts["input"] == expected
    assert counts["valid"] + counts["dead_lettered"] == expected
    assert counts["valid"] == local_valid  # one definition of a valid event, in Beam and out of it
    assert read_table(root / "out" / "dead_letter").num_rows == counts["dead_lettered"]
