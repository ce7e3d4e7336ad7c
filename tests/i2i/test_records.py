import json

import pytest

from i2i.core.records import DeadLetter, Event, parse_event, parse_timestamp_ms, split_events

GOOD = {"user_id": "u", "note_id": "n", "action": "click", "ts": "2026-01-01T00:00:01Z"}


def test_parses_iso_and_epoch_ms():
    assert parse_event(GOOD) == Event("u", "n", "click", 1767225601000)
    assert parse_event({**GOOD, "ts": 1767225601000}).ts_ms == 1767225601000
    assert parse_event(json.dumps({**GOOD, "ts": "1767225601000"})).ts_ms == 1767225601000
    assert parse_timestamp_ms("2026-01-01T01:00:00+01:00") == 1767225600000


@pytest.mark.parametrize(
    "record, reason",
    [
        ({k: v for k, v in GOOD.items() if k != "ts"}, "missing field: ts"),
        ({**GOOD, "action": "like"}, "unknown action: 'like'"),
        ({**GOOD, "ts": "yesterday"}, "unparsable time"),
        ({**GOOD, "user_id": ""}, "empty id: user_id"),
        ({**GOOD, "note_id": 7}, "empty id: note_id"),
        ("{not json", "invalid JSON"),
        ("[1, 2]", "record is not a JSON object"),
    ],
)
def test_bad_records_become_dead_letters_with_reason(record, reason):
    parsed = parse_event(record, source="f.jsonl")
    assert isinstance(parsed, DeadLetter)
    assert reason in parsed.reason
    assert parsed.source == "f.jsonl"


def test_split_accounts_for_every_record():
    records = [GOOD, {**GOOD, "action": "x"}, "garbage", {**GOOD, "user_id": "v"}]
    good, dead = split_events(records)
    assert len(good) == 2 and len(dead) == 2
    assert dead[1].raw == "garbage"
