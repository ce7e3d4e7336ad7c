"""Scoring, splitting and the local channels of the replay against hand-computed examples."""
import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from i2i.app.replay.channels import CooccurrenceChannel, OracleChannel, PopularityChannel, RandomChannel
from i2i.app.replay.results import ChannelResult, ReplayResult
from i2i.app.replay.scoring import UserCase, bootstrap_draws, estimate, hit_and_recall, per_user, recall_curve
from i2i.app.replay.split import split_day, user_cases
from i2i.core.errors import InputError

UTC = dt.timezone.utc
DAY = dt.date(2026, 11, 5)


def at(day_offset: int, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(DAY, dt.time(hour), tzinfo=UTC) + dt.timedelta(days=day_offset)


def test_hit_and_recall_by_hand():
    recalled = ["a", "b", "c", "d", "e"]
    assert hit_and_recall(recalled, {"c", "x"}, 2) == (0.0, 0.0)
    assert hit_and_recall(recalled, {"c", "x"}, 3) == (1.0, 0.5)
    assert hit_and_recall(recalled, {"a", "e", "x", "y"}, 5) == (1.0, 0.5)
    assert hit_and_recall(recalled[:1], {"a"}, 200) == (1.0, 1.0)  # a list shorter than k
    with pytest.raises(ValueError):
        hit_and_recall(recalled, set(), 5)
    np.testing.assert_allclose(recall_curve(["a", "q", "b"], {"a", "b"}, 4), [0.5, 0.5, 1.0, 1.0])


def test_per_user_groups_new_and_old():
    cases = [UserCase("u1", ["h"], {"n1", "o1"}, {"n1"}), UserCase("u2", ["h"], {"o2"}, set())]
    recalls = {"u1": ["o1", "z", "n1"], "u2": ["z", "o2"]}
    every = per_user(cases, recalls, "all", ks=(1, 3))
    np.testing.assert_allclose(every["recall@1"], [0.5, 0.0])
    np.testing.assert_allclose(every["hit@3"], [1.0, 1.0])
    new = per_user(cases, recalls, "new", ks=(1, 3))
    np.testing.assert_allclose(new["recall@1"], [0.0, np.nan])  # u2 has no new target: not counted
    np.testing.assert_allclose(new["recall@3"], [1.0, np.nan])
    old = per_user(cases, recalls, "old", ks=(1,))
    np.testing.assert_allclose(old["hit@1"], [1.0, 0.0])


def test_bootstrap_interval_covers_the_mean_and_ignores_absent_users():
    values = np.array([1.0, 0.0, np.nan, 1.0, 0.0] * 20)
    draws = bootstrap_draws(len(values), reps=500, seed=1)
    result = estimate(values, draws)
    assert result.users == 80 and result.mean == pytest.approx(0.5)
    assert 0.35 < result.low < 0.5 < result.high < 0.65
    constant = estimate(np.full(10, 0.25), bootstrap_draws(10, 100))
    assert (constant.mean, constant.low, constant.high) == pytest.approx((0.25, 0.25, 0.25))
    assert estimate(np.full(4, np.nan), bootstrap_draws(4, 10)).users == 0


def test_paired_differences_against_the_reference():
    cases = [UserCase(f"u{i}", ["h"], {"t"}, {"t"}) for i in range(30)]
    good = ChannelResult("trained model", "embedding", {c.user_id: ["t"] for c in cases}, 0.0)
    bad = ChannelResult("other", "x", {c.user_id: ["z"] for c in cases}, 0.0)
    result = ReplayResult({}, cases, [good, bad], "trained model", reps=200)
    difference = result.differences["other"]["new"]["recall@50"]
    assert (difference.mean, difference.low, difference.high) == (1.0, 1.0, 1.0)
    assert result.metrics["other"]["old"]["recall@50"].users == 0
    assert "| trained model |" in result.to_markdown()


def tables():
    notes = pa.table({
        "note_id": ["o1", "o2", "o3", "o4", "n1", "f1"],
        "published_at": pa.array([at(-3), at(-3), at(-2), at(-2), at(0, 1), at(1, 1)], pa.timestamp("ms", "UTC")),
    })
    rows = [  # user, note, action, day offset, hour
        ("u1", "o1", "click", -2, 9), ("u1", "o2", "click", -1, 9), ("u1", "o1", "click", -1, 10),
        ("u1", "n1", "click", 0, 8), ("u1", "o3", "click", 0, 9), ("u1", "o2", "click", 0, 10),
        ("u2", "o3", "click", -1, 9), ("u2", "o4", "click", 0, 9),
        ("u3", "o4", "click", 0, 9),  # no history before D
        ("u4", "o3", "click", -1, 9), ("u4", "o3", "click", 0, 9),  # only a re-click
        ("u5", "o1", "view", -1, 9), ("u5", "o2", "view", 0, 9),  # views only
        ("u6", "o1", "click", -1, 9), ("u6", "o4", "click", 1, 9),  # clicks after D do not count
    ]
    events = pa.table({
        "user_id": [r[0] for r in rows], "note_id": [r[1] for r in rows], "action": [r[2] for r in rows],
        "ts": pa.array([at(r[3], r[4]) for r in rows], pa.timestamp("ms", "UTC")),
    })
    return notes, events


def test_split_and_cases_by_hand():
    notes, events = tables()
    split = split_day(notes, events, DAY, deleted=["o4"])
    assert split.notes_before.column("note_id").to_pylist() == ["o1", "o2", "o3", "o4"]
    assert split.new_ids == {"n1"}  # f1 is published after D: it does not exist yet
    assert split.catalogue() == ["o1", "o2", "o3", "n1"]
    cases, counts = user_cases(split, history_length=20)
    by_user = {case.user_id: case for case in cases}
    assert sorted(by_user) == ["u1"]
    assert by_user["u1"].history == ["o1", "o2"]  # latest distinct click first
    assert by_user["u1"].targets == {"n1", "o3"} and by_user["u1"].new_targets == {"n1"}
    # u2 clicked only the deleted o4; u3 has no history; u4 only re-clicked
    assert (counts.active_users, counts.no_history, counts.only_reclicks, counts.scored) == (4, 1, 2, 1)
    assert (counts.reclicks, counts.deleted_clicks) == (2, 1)  # u3's click on o4 is not scored at all


def test_split_refuses_bad_days_and_unknown_deletes():
    notes, events = tables()
    with pytest.raises(InputError, match="no events before"):
        split_day(notes, events, DAY - dt.timedelta(days=10))
    with pytest.raises(InputError, match="no clicks on"):
        split_day(notes, events, DAY + dt.timedelta(days=5))
    with pytest.raises(InputError, match="not in the catalogue"):
        split_day(notes, events, DAY, deleted=["n1"])


def test_cooccurrence_channel_sums_similarities_like_sar():
    related = pa.table({"src_note_id": ["a", "a", "b", "b", "c"], "dst_note_id": ["x", "y", "x", "a", "z"],
                        "score": [0.5, 0.4, 0.3, 0.9, 1.0], "rank": pa.array([1, 2, 1, 2, 1], pa.int32())})
    channel = CooccurrenceChannel(related, allowed={"a", "b", "x", "y"})
    # history a, b: x = 0.5 + 0.3, y = 0.4; a is in the history, z is not allowed (deleted)
    assert channel.scores(["a", "b"]) == pytest.approx({"x": 0.8, "y": 0.4})
    case = UserCase("u", ["a", "b"], {"y"})
    assert channel.recall([case], 1) == {"u": ["x"]}
    assert channel.recall([UserCase("v", ["c"], {"z"})], 5) == {"v": []}


def test_popularity_random_and_oracle_channels():
    _, events = tables()
    before = events.filter(pa.compute.less(events.column("ts"), pa.scalar(at(0, 0), events.column("ts").type)))
    popularity = PopularityChannel(before, allowed={"o1", "o2", "o3"}, days=7)
    assert popularity.ranked == ["o1", "o3", "o2"]  # o1: 3 clicks, o3: 2, o2: 1
    case = UserCase("u", ["o1"], {"o2"})
    assert popularity.recall([case], 5) == {"u": ["o3", "o2"]}
    randomly = RandomChannel(["o1", "o2", "o3", "n1"], seed=3).recall([case], 10)["u"]
    assert sorted(randomly) == ["n1", "o2", "o3"]
    assert OracleChannel().recall([case], 10) == {"u": ["o2"]}


def reference_random_recall(catalogue, cases, k, seed):
    """The random channel written plainly: a fresh copy of the catalogue less the history per user."""
    import random

    rng = random.Random(seed)
    out = {}
    for case in cases:
        pool = [note for note in catalogue if note not in set(case.history)]
        out[case.user_id] = rng.sample(pool, min(k, len(pool)))
    return out


@pytest.mark.parametrize("size", [150, 900, 5000])  # random.sample copies small pools and draws from large ones
def test_random_channel_draws_what_a_copied_pool_would(size):
    catalogue = [f"n{i:05d}" for i in range(size)]
    rng = np.random.default_rng(size)
    cases = [UserCase(f"u{u}", [catalogue[i] for i in rng.integers(0, size, rng.integers(1, 25))]
                      + ["not-in-catalogue"], {"t"}) for u in range(40)]
    cases.append(UserCase("edges", [catalogue[0], catalogue[-1], catalogue[1]], {"t"}))
    got = RandomChannel(catalogue, seed=7).recall(cases, 200)
    assert got == reference_random_recall(catalogue, cases, 200, seed=7)
    for case in cases:
        assert not set(got[case.user_id]) & set(case.history) and len(got[case.user_id]) == min(200, size - len(
            set(case.history) & set(catalogue)))
