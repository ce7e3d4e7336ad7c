"""The replay end to end on a tiny fashion-notes set (real Beam jobs, real FAISS indexes, real
recall servers over gRPC, tiny backbones), and its report rendered in headless Debian chromium."""
import contextlib
import datetime as dt
import html.parser
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from i2i.core.io import read_table

REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO / "test-artifacts"
DAY = "2026-11-04"


def replay_command(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "i2i.app.cli", "eval", "replay", "--data", str(data), "--day", DAY,
            "--out", str(out), "--backbone", "tiny", "--steps", "2", "--batch-size", "4", "--history", "1000",
            "--delete-random", "3", "--bootstrap", "200", *extra]


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay")
    data = root / "data"
    subprocess.run([sys.executable, "-m", "i2i.app.cli", "data", "fashion-notes", "--out", str(data), "--notes", "160",
                    "--users", "60", "--days", "4"], check=True, capture_output=True, timeout=300)
    command = replay_command(data, root / "out", "--report", str(root / "report"), "--json", str(root / "table.json"),
                             "--report-users", "4")
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return {"root": root, "data": data, "out": root / "out", "report": root / "report", "stdout": result.stdout,
            "command": command}


def channel_lists(recalls_path: Path) -> dict[str, dict[str, list[str]]]:
    """channel -> user -> recalled notes in rank order, from a replay's recalls.parquet."""
    lists: dict[str, dict[str, list[tuple[int, str]]]] = {}
    for row in pq.read_table(recalls_path).to_pylist():
        lists.setdefault(row["channel"], {}).setdefault(row["user_id"], []).append((row["rank"], row["note_id"]))
    return {c: {u: [n for _, n in sorted(v)] for u, v in users.items()} for c, users in lists.items()}


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

    by_channel = channel_lists(replay["out"] / "recalls.parquet")
    for channel in table["channels"][:4]:  # the server channels: rescored here from what the server returned
        assert channel["failed_requests"] == 0
        lists = by_channel[channel["name"]]
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


def test_stages_are_timed_and_the_training_recipe_recorded(replay):
    summary = json.loads((replay["out"] / "replay.json").read_text())["summary"]
    assert list(summary["stage_seconds"]) == [
        "split", "write split", "cooccur", "pairs", "train",
        "trained: embed and index", "trained: recall through the server", "untrained checkpoint",
        "untrained: embed and index", "untrained: recall through the server",
        "minilm: embed and index", "minilm: recall through the server",
        "image: embed and index", "image: recall through the server",
        "co-occurrence (SAR): recall", "popularity: recall", "random: recall", "oracle: recall", "scores"]
    assert summary["train_job"] == {"variant": "notellm2", "backbone": "tiny", "config": None, "steps": 2,
                                    "batch_size": 4, "llm_layers": None}
    assert summary["command"].startswith("i2i eval replay --data ")


def day_cases(data: Path):
    from i2i.app.replay.split import load_split, user_cases

    split = load_split(data, dt.date.fromisoformat(DAY), delete_random=3, seed=0)
    return user_cases(split, 1000)[0]


def test_recalls_do_not_depend_on_the_requests_in_flight(replay):
    from i2i.app.replay.channels import ServerChannel
    from i2i.testing.serving import ServerProcess

    cases = day_cases(replay["data"])
    channel = replay["out"] / "channels" / "trained"
    with ServerProcess(channel / "index", f"parquet:{channel / 'table'}") as server:
        one = ServerChannel("trained model", server, workers=1).recall(cases, 200)
        many = ServerChannel("trained model", server, workers=8).recall(cases, 200)
    assert list(one) == list(many) == [case.user_id for case in cases]
    assert one == many
    assert {u: v for u, v in one.items() if v} == channel_lists(replay["out"] / "recalls.parquet")["trained model"]


def files_and_times(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_a_rerun_skips_every_stage_and_gives_the_same_table(replay, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(replay["out"], out)
    built = {name: files_and_times(out / name) for name in ("work", "channels")}
    command = replay_command(replay["data"], out)
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    # nothing was trained, embedded, indexed or recalled again: every file is the one the first run wrote
    assert {name: files_and_times(out / name) for name in ("work", "channels")} == built
    assert result.stdout.count("already made, reused") == 4
    again = json.loads((out / "replay.json").read_text())
    first = json.loads((replay["out"] / "replay.json").read_text())
    assert [c["metrics"] for c in again["channels"]] == [c["metrics"] for c in first["channels"]]


def test_a_killed_replay_resumes_where_it_stopped(replay, tmp_path):
    out = tmp_path / "out"
    command = replay_command(replay["data"], out, "--channels", "trained,minilm,oracle")
    trained = out / "work" / "_trained.done.json"
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 900  # a guard against a hung run, not a measurement
    try:
        while process.poll() is None and not trained.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:  # kill the replay and anything it started (a recall server), as a crash would
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the replay ended before it could be interrupted"
    assert trained.exists() and not (out / "replay.json").exists()
    marker = (trained.read_text(), trained.stat().st_mtime_ns)

    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert (trained.read_text(), trained.stat().st_mtime_ns) == marker  # not trained again
    resumed, whole = channel_lists(out / "recalls.parquet"), channel_lists(replay["out"] / "recalls.parquet")
    for name in ("trained model", "MiniLM text", "oracle"):  # the same lists as the uninterrupted replay
        assert resumed[name] == whole[name], name


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
    assert "3 deleted on day D" in page  # the run's facts head the page; the JSON record sits at its end
    assert page.index("A sample of") < page.index("Run details (JSON)")
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
