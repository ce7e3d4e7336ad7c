"""Paper eq. 2 rules, hand-computed on tiny logs, plus agreement with an exact reference."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from pipelines.cooccurrence import PairBlockLimits, exact_scores, top_related, user_pair_partials
from tests.pipelines.cooccur_reference import events_table, reference_related, reference_scores, scores_dict

W = 60  # window in seconds
S = 1000  # one second in ms


def scores_of(rows, window=W, cap=1000, max_candidates=4_000_000):
    partials, stats = user_pair_partials(events_table(rows), window, cap, PairBlockLimits(max_candidates))
    return scores_dict(exact_scores(partials)), stats


def test_window_edges_and_equal_timestamps():
    rows = [
        ("u", "a", "view", 0),
        ("u", "b", "click", W * S),  # exactly at t1 + window: counted
        ("u", "c", "click", W * S + 1),  # 1 ms past the window from a: not for a
        ("u", "d", "click", W * S + 1),  # same time as c: c->d and d->c do not count
    ]
    scores, _ = scores_of(rows)
    n_u = 3  # b, c, d clicked
    assert scores == {
        ("a", "b"): (1 / n_u, 1),
        ("b", "c"): (1 / n_u, 1),
        ("b", "d"): (1 / n_u, 1),
    }


def test_click_before_view_counts_only_forward():
    scores, _ = scores_of([("u", "b", "click", 0), ("u", "a", "view", 5 * S)])
    assert scores == {}  # a is after b, and a view on a is not a click


def test_event_on_a_counts_whether_view_or_click():
    scores, _ = scores_of([("u", "a", "click", 0), ("u", "b", "click", S)])
    assert scores == {("a", "b"): (0.5, 1)}


def test_same_note_excluded():
    scores, _ = scores_of([("u", "a", "view", 0), ("u", "a", "click", S)])
    assert scores == {}


def test_user_counted_once_per_ordered_pair():
    rows = [("u", "a", "view", 0), ("u", "b", "click", S), ("u", "a", "view", 2 * S), ("u", "b", "click", 3 * S)]
    scores, stats = scores_of(rows)
    assert scores == {("a", "b"): (1.0, 1)}
    assert stats.user_pairs == 1


def test_n_u_counts_distinct_clicked_notes():
    # u clicks b twice and c once, views d: N_u = 2 (b, c).
    rows = [("u", "a", "view", 0), ("u", "b", "click", S), ("u", "b", "click", 2 * S),
            ("u", "c", "click", 10 * W * S), ("u", "d", "view", 11 * W * S)]
    scores, _ = scores_of(rows)
    assert scores == {("a", "b"): (0.5, 1)}


def test_view_only_user_contributes_nothing():
    base = [("u1", "a", "view", 0), ("u1", "b", "click", S)]
    viewer = [("u2", "a", "view", 0), ("u2", "b", "view", S), ("u2", "c", "view", 2 * S)]
    alone, _ = scores_of(base)
    together, stats = scores_of(base + viewer)
    assert alone == together == {("a", "b"): (1.0, 1)}
    assert stats.users == 2


def test_scores_sum_over_users_exactly():
    # u1: N=3, u2: N=6, u3: N=2 -> a->b = 1/3 + 1/6 = 1/2 exactly; a->c = 1/2 from u3 alone.
    rows = [("u1", "a", "view", 0), ("u1", "b", "click", S), ("u1", "x1", "click", 9 * W * S),
            ("u1", "x2", "click", 19 * W * S)]
    rows += [("u2", "a", "view", 0), ("u2", "b", "click", S)] + [
        ("u2", f"y{i}", "click", (10 + 10 * i) * W * S) for i in range(5)]
    rows += [("u3", "a", "view", 0), ("u3", "c", "click", S), ("u3", "z", "click", 50 * W * S)]
    scores, _ = scores_of(rows)
    assert scores[("a", "b")] == (0.5, 2)
    assert scores[("a", "c")] == (0.5, 1)
    related = top_related(exact_scores(user_pair_partials(events_table(rows), W, 1000)[0]), 30, 0.01, 1)
    a_rows = [r for r in related.to_pylist() if r["src_note_id"] == "a"]
    assert a_rows == [{"src_note_id": "a", "dst_note_id": "b", "score": 0.5, "rank": 1}]  # tie: b < c


def test_per_user_cap_keeps_latest_events():
    # Cap 2 keeps the last two events (b at 1 s, c at 2 s); a at 0 is gone, and N_u = 2 (b, c).
    rows = [("u", "a", "view", 0), ("u", "b", "click", S), ("u", "c", "click", 2 * S)]
    scores, stats = scores_of(rows, cap=2)
    assert scores == {("b", "c"): (0.5, 1)}
    assert (stats.users, stats.capped_users, stats.kept_events) == (1, 1, 2)


def test_cap_cut_at_equal_times_is_deterministic():
    # Three events at the same time: the cut keeps the largest (note id, action) ones.
    rows = [("u", "c", "click", S), ("u", "a", "click", S), ("u", "b", "click", S), ("u", "z", "click", 2 * S)]
    scores, _ = scores_of(rows, cap=3)
    assert scores == {("b", "z"): (1 / 3, 1), ("c", "z"): (1 / 3, 1)}


def test_chunked_expansion_gives_same_result():
    rows = [(f"u{u}", f"n{(u * 7 + i) % 5}", "click" if i % 2 else "view", i * 10 * S) for u in range(4) for i in range(12)]
    assert scores_of(rows, max_candidates=1)[0] == scores_of(rows)[0] == reference_scores(rows, W)


def test_bounds_and_top_t_with_ties():
    scores = exact_scores(user_pair_partials(events_table([]), W, 10)[0])
    assert scores.num_rows == 0
    import pyarrow as pa

    table = pa.table({
        "src_note_id": ["a", "a", "a", "a", "a", "b"],
        "dst_note_id": ["e", "d", "c", "b", "f", "a"],
        "score": [0.5, 0.5, 31.0, 0.005, 30.0, 0.01],
        "users": [1, 1, 40, 1, 30, 1],
    })
    related = top_related(table, up=30, low=0.01, top_t=2).to_pylist()
    assert related == [
        {"src_note_id": "a", "dst_note_id": "f", "score": 30.0, "rank": 1},  # up is inclusive
        {"src_note_id": "a", "dst_note_id": "d", "score": 0.5, "rank": 2},  # d before e on a tie
        {"src_note_id": "b", "dst_note_id": "a", "score": 0.01, "rank": 1},  # low is inclusive
    ]


def test_top_t_is_independent_of_row_order():
    import pyarrow as pa

    rows = [("a", f"n{i}", float(i % 3), 1) for i in range(20)]
    table = pa.table({k: [r[i] for r in rows] for i, k in enumerate(["src_note_id", "dst_note_id", "score", "users"])})
    assert top_related(table, 30, 0.5, 3).equals(top_related(table.take(list(range(19, -1, -1))), 30, 0.5, 3))


event = st.tuples(st.sampled_from(["u1", "u2", "u3", "u4"]), st.sampled_from(list("abcdefg")),
                  st.sampled_from(["view", "click"]), st.integers(0, 400).map(lambda s: s * 250))


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(event, max_size=60), cap=st.sampled_from([1, 3, 8, 1000]), window=st.sampled_from([0, 1, 10, 30]))
def test_agrees_exactly_with_reference(rows, cap, window):
    partials, _ = user_pair_partials(events_table(rows), window, cap)
    scores = exact_scores(partials)
    expected = reference_scores(rows, window, cap)
    assert scores_dict(scores) == expected
    related = top_related(scores, 1.0, 0.2, 2).to_pylist()
    assert [(r["src_note_id"], r["dst_note_id"], r["score"], r["rank"]) for r in related] == \
        reference_related(expected, up=1.0, low=0.2, top_t=2)


def test_exact_sum_path_when_a_pair_has_users_of_many_distinct_n_u():
    """lcm of the N_u values far beyond 2**52: the exact rational path, rounded once."""
    from fractions import Fraction

    n_values = [2, 3, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47]  # log2(lcm) ~ 59; N_u = 3 twice
    rows = []
    for user, n in enumerate(n_values):
        rows += [(f"u{user}", "a", "view", 0), (f"u{user}", "b", "click", S)]
        rows += [(f"u{user}", f"f{user}-{i}", "click", (10 + 10 * i) * W * S) for i in range(n - 1)]  # far apart
    scores, _ = scores_of(rows)
    expected = float(sum(Fraction(1, n) for n in n_values))
    assert scores[("a", "b")] == (expected, len(n_values))
    assert expected != sum(1 / n for n in n_values)  # a float sum would be off by an ulp here
    assert scores == reference_scores(rows, W)


def test_fractional_window_seconds():
    """A 1.5 s window: a click 1500 ms after the event counts, 1501 ms does not (no truncation to 1 s)."""
    rows = [("u", "a", "view", 0), ("u", "b", "click", 1500), ("u", "c", "click", 1501)]
    scores, _ = scores_of(rows, window=1.5)
    assert scores == {("a", "b"): (0.5, 1), ("b", "c"): (0.5, 1)}
    assert scores == reference_scores(rows, 1.5)
