"""The replay end to end on a tiny fashion-notes set (real Beam jobs, real FAISS indexes, real
recall servers over gRPC, tiny backbones), and its report rendered in headless Debian chromium."""
import html.parser
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from i2i.core.io import read_table

REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO / "test-artifacts"
DAY = "2026-11-04"


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay")
    data = root / "data"
    subprocess.run([sys.executable, "-m", "i2i.app.cli", "data", "fashion-notes", "--out", str(data), "--notes", "160",
                    "--users", "60", "--days", "4"], check=True, capture_output=True, timeout=300)
    command = [sys.executable, "-m", "i2i.app.cli", "eval", "replay", "--data", str(data), "--day", DAY,
               "--out", str(root / "out"), "--report", str(root / "report"), "--json", str(root / "table.json"),
               "--backbone", "tiny", "--steps", "2", "--batch-size", "4", "--history", "1000",
               "--delete-random", "3", "--bootstrap", "200", "--report-users", "4"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return {"root": root, "data": data, "out": root / "out", "report": root / "report", "stdout": result.stdout}


def day_d_targets(data: Path, deleted: set[str]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Day D clicks per user, less notes the user clicked before D and deleted notes (computed here),
    and each user's clicks before D."""
    events = read_table(data / "events")
    clicks = events.filter(pc.equal(events.column("action"), "click"))
    day = pc.strftime(clicks.column("ts"), format="%Y-%m-%d").to_pylist()
    before, on_day = {}, {}
    for user, note, date in zip(clicks.column("user_id").to_pylist(), clicks.column("note_id").to_pylist(), day):
        if date < DAY:
            before.setdefault(user, set()).add(note)
        elif date == DAY:
            on_day.setdefault(user, set()).add(note)
    targets = {user: notes - before[user] - deleted for user, notes in on_day.items()
               if user in before and notes - before[user] - deleted}
    return targets, before


def test_replay_scores_every_channel_from_the_server(replay):
    table = json.loads((replay["out"] / "replay.json").read_text())
    assert table == json.loads((replay["root"] / "table.json").read_text())
    names = [c["name"] for c in table["channels"]]
    assert names == ["trained model", "untrained checkpoint", "MiniLM text", "image features",
                     "co-occurrence (SAR)", "popularity", "random", "oracle"]
    summary = table["summary"]
    assert summary["new_notes"] > 0 and summary["deleted"] == 3
    deleted = set(read_table(replay["out"] / "work" / "data" / "deletes").column("note_id").to_pylist())
    notes = read_table(replay["data"] / "notes")
    day = pc.strftime(notes.column("published_at"), format="%Y-%m-%d").to_pylist()
    new_ids = {n for n, d in zip(notes.column("note_id").to_pylist(), day) if d == DAY}

    targets, clicked_before = day_d_targets(replay["data"], deleted)
    assert table["users"]["all"] == len(targets) == summary["users"]["scored"]
    assert table["users"]["new"] == sum(1 for t in targets.values() if t & new_ids)

    recalls = pq.read_table(replay["out"] / "recalls.parquet").to_pylist()
    by_channel = {}
    for row in recalls:
        by_channel.setdefault(row["channel"], {}).setdefault(row["user_id"], []).append((row["rank"], row["note_id"]))
    for channel in table["channels"][:4]:  # the server channels: rescored here from what the server returned
        assert channel["failed_requests"] == 0
        lists = {u: [n for _, n in sorted(v)] for u, v in by_channel[channel["name"]].items()}
        assert set(lists) == set(targets)
        assert all(len(v) == len(set(v)) <= 200 for v in lists.values())
        assert not any(set(v) & clicked_before[u] for u, v in lists.items())  # the history (every click) is excluded
        assert not deleted & {n for v in lists.values() for n in v}  # the update removed them from the index
        for group, pick in (("all", lambda t: t), ("new", lambda t: t & new_ids), ("old", lambda t: t - new_ids)):
            per_user = [len(pick(t) & set(lists[u][:100])) / len(pick(t)) for u, t in targets.items() if pick(t)]
            expected = sum(per_user) / len(per_user)
            got = channel["metrics"][group]["recall@100"]
            assert got["mean"] == pytest.approx(expected) and got["low"] <= got["mean"] <= got["high"]
        assert {n for v in lists.values() for n in v} & new_ids  # new notes reach the served index
    by_name = {c["name"]: c for c in table["channels"]}
    for name in ("co-occurrence (SAR)", "popularity"):  # nobody clicked a new note before D
        assert by_name[name]["metrics"]["new"]["recall@200"]["mean"] == 0.0
    assert by_name["oracle"]["metrics"]["all"]["recall@200"]["mean"] == 1.0
    assert "trained model minus each channel" in (replay["out"] / "replay.md").read_text()


class References(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.images = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.images += tag == "img"
        for key in ("src", "href"):
            if attrs.get(key):
                self.refs.append(attrs[key])


CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const images = [...document.images].map(i => ({src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth}));
  const pre = document.createElement('pre'); pre.id = 'render-check';
  pre.textContent = JSON.stringify({images});
  document.body.appendChild(pre);
});
</script></body>"""


def chromium() -> str:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: scripts/setup_env.sh installs it (apt-get install -y chromium)")
    return binary


def test_report_renders_in_headless_chromium(replay):
    report = replay["report"]
    page = (report / "index.html").read_text()
    parser = References()
    parser.feed(page)
    assert parser.images >= 3 + 4 * 2  # three plots, then history and recalled notes of four users
    for ref in parser.refs:  # every link stays inside the report directory and exists
        assert not re.match(r"^(/|[a-z]+:)", ref), ref
        assert (report / ref).is_file(), ref

    checked = replay["root"] / "checked"
    shutil.copytree(report, checked)
    (checked / "index.html").write_text(page.replace("</body>", CHECK_SCRIPT))
    browser = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
               "--virtual-time-budget=15000"]
    dom = subprocess.run([*browser, "--dump-dom", (checked / "index.html").as_uri()], capture_output=True,
                         text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="render-check">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stdout[-2000:]
    images = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))["images"]
    assert len(images) == parser.images
    broken = [i["src"] for i in images if not i["complete"] or i["width"] <= 0]
    assert not broken, broken
    assert "Next-day replay of " + DAY in dom.stdout and "trained model" in dom.stdout

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "replay-report.png"
    screenshot.unlink(missing_ok=True)
    shot = subprocess.run([*browser, f"--screenshot={screenshot}", "--window-size=1400,2000",
                           (report / "index.html").as_uri()], capture_output=True, text=True, timeout=180)
    assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    print(f"report screenshot: {screenshot}")
