"""A static HTML report of a replay: for a sample of users, their recent history beside what
each channel recalled (day D clicks marked), Recall@k curves per channel, and the run's summary.

Everything the page needs lies inside the report directory (images are copied, plots are PNGs
next to the page), so it opens from disk or any static file host without a server.
"""
from __future__ import annotations

import html
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from i2i.app.replay.results import GROUP_TITLES, ReplayResult, curves
from i2i.app.replay.scoring import GROUPS, KS, UserCase
from i2i.app.replay.split import DaySplit
from i2i.core.io import atomic_dir, atomic_write_text

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px}h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}
.row{display:flex;gap:6px;flex-wrap:wrap;align-items:flex-start}
.card{width:92px;font-size:11px;border:2px solid #ddd;border-radius:4px;padding:2px;background:#fff}
.card img{width:88px;height:88px;object-fit:cover;display:block}
.card .noimg{width:88px;height:88px;background:#eee;display:flex;align-items:center;justify-content:center;color:#777}
.card.clicked{border-color:#1a9e3a;background:#e9f8ec}.card .tag{font-weight:bold;color:#1a9e3a}
.card .new{color:#c25400;font-weight:bold}.label{width:150px;font-size:12px;font-weight:bold;flex:none}
.user{border-top:1px solid #ccc;padding-top:8px;margin-top:16px}.plots img{max-width:32%;margin-right:1%}
pre{background:#f6f6f6;padding:8px;font-size:12px;overflow:auto}
"""


@dataclass
class ReportConfig:
    users: int = 8
    history_shown: int = 8
    recalled_shown: int = 10
    seed: int = 0


IMAGE_TYPES = ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"GIF8", ".gif"), (b"RIFF", ".webp"))


def image_suffix(data: bytes) -> str | None:
    """The file suffix of encoded image bytes, or None when they are not a known image format."""
    for magic, suffix in IMAGE_TYPES:
        if data.startswith(magic):
            return suffix
    return None


def safe_name(note_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", note_id)


def sample_users(cases: Sequence[UserCase], count: int, seed: int) -> list[UserCase]:
    """Users with a click on a new note first (the report's point), then others; seeded."""
    rng = random.Random(seed)
    with_new = [c for c in cases if c.new_targets]
    others = [c for c in cases if not c.new_targets]
    rng.shuffle(with_new)
    rng.shuffle(others)
    half = min(len(with_new), (count + 1) // 2)
    chosen = with_new[:half] + others[:count - half]
    return chosen + with_new[half:half + count - len(chosen)]


def plot_curves(result: ReplayResult, out: Path) -> list[Path]:
    """One PNG per click group: mean Recall@k (k = 1..200) of every channel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    max_k = max(KS)
    paths = []
    for group in GROUPS:
        figure, axes = plt.subplots(figsize=(5.5, 4))
        for channel in result.channels:
            values = curves(result.cases, channel.recalls, group, max_k)
            axes.plot(range(1, max_k + 1), values, label=channel.name)
        axes.set_xlabel("k")
        axes.set_ylabel("Recall@k")
        axes.set_ylim(0, 1.02)
        axes.set_title(f"{GROUP_TITLES[group]} ({result.users_in(group)} users)", fontsize=9)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7, loc="upper left")
        figure.tight_layout()
        path = out / f"recall_{group}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths


class NoteCards:
    """Renders note cards and copies the images they show into ``images/``."""

    def __init__(self, notes: pa.Table, out: Path, shown: Iterable[str] | None = None) -> None:
        columns = [c for c in ("note_id", "title", "image") if c in notes.column_names]
        notes = notes.select(columns)
        if shown is not None:  # only the notes on the page: the catalogue's images stay in Arrow
            notes = notes.filter(pc.is_in(notes.column("note_id"), value_set=pa.array(sorted(set(shown)), pa.string())))
        self.notes = {row["note_id"]: row for row in notes.to_pylist()}
        self.out = out
        self.images: dict[str, str] = {}

    def image(self, note_id: str) -> str | None:
        if note_id in self.images:
            return self.images[note_id]
        data = (self.notes.get(note_id) or {}).get("image")
        suffix = image_suffix(data) if data else None
        if suffix is None:
            return None
        relative = f"images/{safe_name(note_id)}{suffix}"
        (self.out / relative).parent.mkdir(parents=True, exist_ok=True)
        (self.out / relative).write_bytes(data)
        self.images[note_id] = relative
        return relative

    def card(self, note_id: str, clicked: bool = False, new: bool = False) -> str:
        title = (self.notes.get(note_id) or {}).get("title") or note_id
        source = self.image(note_id)
        picture = (f'<img src="{html.escape(source)}" alt="{html.escape(title)}" loading="eager">' if source
                   else '<div class="noimg">no image</div>')
        badges = ('<span class="tag">clicked</span> ' if clicked else "") + ('<span class="new">new</span>' if new else "")
        css = "card clicked" if clicked else "card"
        return (f'<div class="{css}" title="{html.escape(note_id)}">{picture}<div>{html.escape(title[:60])}</div>'
                f"<div>{badges}</div></div>")


def shown_notes(result: ReplayResult, users: Sequence[UserCase], config: ReportConfig) -> set[str]:
    """Every note the users' sections show: their history and each channel's first recalled notes."""
    shown: set[str] = set()
    for case in users:
        shown.update(case.history[:config.history_shown])
        for channel in result.channels:
            shown.update(channel.recalls.get(case.user_id, [])[:config.recalled_shown])
    return shown


def user_section(case: UserCase, result: ReplayResult, cards: NoteCards, new_ids: set[str],
                 config: ReportConfig) -> str:
    parts = [f'<div class="user"><h3>user {html.escape(case.user_id)}: {len(case.targets)} clicks on day D '
             f'({len(case.new_targets)} on new notes)</h3>',
             '<div class="row"><div class="label">history (latest first)</div>'
             + "".join(cards.card(n) for n in case.history[:config.history_shown]) + "</div>"]
    for channel in result.channels:
        if channel.name == "oracle":
            continue
        recalled = channel.recalls.get(case.user_id, [])
        found = [i + 1 for i, n in enumerate(recalled) if n in case.targets]
        label = f"{html.escape(channel.name)}<br><small>clicked at ranks {found[:6] or 'none'}</small>"
        parts.append(f'<div class="row"><div class="label">{label}</div>'
                     + "".join(cards.card(n, n in case.targets, n in new_ids)
                               for n in recalled[:config.recalled_shown]) + "</div>")
    return "\n".join(parts) + "</div>"


def render(result: ReplayResult, split: DaySplit, out: Path, config: ReportConfig) -> str:
    notes = pa.concat_tables([split.notes_before, split.new_notes.cast(split.notes_before.schema)])
    users = sample_users(result.cases, config.users, config.seed)
    cards = NoteCards(notes, out, shown_notes(result, users, config))
    plots = plot_curves(result, out)
    table = markdown_table_html(result)
    day = result.summary.get("day", "")
    sections = [
        f"<h1>Next-day replay of {html.escape(str(day))}</h1>",
        f"<p>{len(result.cases)} users scored; each sent their click history before day D to the channel, "
        f"and the notes they clicked on day D are marked <span class='tag'>clicked</span>; "
        f"<span class='new'>new</span> = published on day D.</p>",
        f"<p>{html.escape(run_facts(result.summary))}</p>",
        '<h2>Recall@k per channel</h2><div class="plots">'
        + "".join(f'<img src="{p.name}" alt="{p.stem}">' for p in plots) + "</div>",
        f"<h2>A sample of {len(users)} users</h2>",
        *[user_section(case, result, cards, split.new_ids, config) for case in users],
        "<h2>Results</h2>", table,
        # the whole run record stays one click away: a person looks at the notes first
        "<details><summary>Run details (JSON)</summary>"
        f"<pre>{html.escape(json.dumps(result.summary, indent=2, default=str))}</pre></details>",
    ]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Next-day replay</title>"
            f"<style>{STYLE}</style></head><body>" + "\n".join(sections) + "</body></html>\n")


def run_facts(summary: dict) -> str:
    """One sentence of what was replayed, from the run's summary (keys absent in older runs are left out)."""
    facts = [f"{summary[key]} {label}" for key, label in (("notes_before", "notes before day D"),
                                                          ("new_notes", "published on day D"),
                                                          ("deleted", "deleted on day D")) if key in summary]
    if "wall_seconds" in summary:
        facts.append(f"this invocation took {float(summary['wall_seconds']):.0f} s (stages done before are reused)")
    command = summary.get("command")
    return "; ".join(facts) + (f". Command: {command}" if command else "")


def markdown_table_html(result: ReplayResult) -> str:
    rows = []
    for group in GROUPS:
        rows.append(f"<h3>{html.escape(GROUP_TITLES[group])} — {result.users_in(group)} users</h3><table><tr>"
                    "<th>channel</th><th>kind</th>" + "".join(f"<th>HR@{k}</th>" for k in KS)
                    + "".join(f"<th>R@{k}</th>" for k in KS) + "</tr>")
        for channel in result.channels:
            m = result.metrics[channel.name][group]
            cells = [m[f"hit@{k}"].format() for k in KS] + [m[f"recall@{k}"].format() for k in KS]
            rows.append(f"<tr><td>{html.escape(channel.name)}</td><td>{html.escape(channel.kind)}</td>"
                        + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        rows.append("</table>")
    return "\n".join(rows)


def write_report(result: ReplayResult, split: DaySplit, out: Path, config: ReportConfig | None = None) -> Path:
    """Writes ``out/index.html`` with its images and plots; the whole directory is replaced atomically."""
    config = config or ReportConfig()
    with atomic_dir(out) as tmp:
        page = render(result, split, tmp, config)
        atomic_write_text(tmp / "index.html", page)
    return Path(out) / "index.html"
