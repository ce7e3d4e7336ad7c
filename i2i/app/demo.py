"""``i2i demo``: the whole system end to end on fashion-notes, then the next day.

Day one: generate data, co-occurrence, pairs, train (real offline backbones, CPU-sized), embed,
build the index, start the recall server, recall for a few users, evaluate. Next day: new notes
arrive and some are deleted; they are embedded, the index is updated, the server reloads it while
serving, and a recall returns a new note and no deleted one. Last, the next day's users are
replayed through the server (``i2i eval replay``'s scoring) and a static HTML report is written.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from i2i.core.cmdline import ArgumentParser
from i2i.core.errors import InputError
from i2i.core.io import read_table, write_events_by_day, write_table


@dataclass
class DemoConfig:
    out: Path = Path("demo_out")
    notes: int = 1500
    users: int = 100  # fashion-notes users open about 5 sessions a day: about 50k events over 11 days
    days: int = 10
    seed: int = 0
    train_steps: int = 150  # the cpu_offline recipe at B = 8 (its other settings unchanged)
    batch_size: int = 8
    llm_layers: int = 0  # 0 = the recipe's
    backbone: str = "offline"
    deletes: int = 5  # day-one notes deleted on the next day; notes published that day arrive as new
    users_shown: int = 3
    k: int = 10


class Stage:
    """Prints a banner and the wall time of one stage, and records the time in ``timings``."""

    def __init__(self, number: int, title: str, timings: dict[str, float]) -> None:
        self.label = f"[{number}] {title}"
        self.timings = timings

    def __enter__(self) -> "Stage":
        print(f"\n=== {self.label} ===", flush=True)
        self.started = time.perf_counter()
        return self

    def __exit__(self, exc_type, *_) -> None:
        status = "done" if exc_type is None else "FAILED"
        seconds = time.perf_counter() - self.started
        self.timings[self.label] = round(seconds, 1)
        print(f"--- {self.label}: {status} in {seconds:.1f}s", flush=True)


def show(job) -> None:
    """Prints the typed config a stage runs with."""
    print(f"{type(job).__name__}: " + ", ".join(f"{k}={v}" for k, v in asdict(job).items() if v not in (None, [], {})),
          flush=True)


def split_next_day(notes: pa.Table, events: pa.Table, cutoff: dt.datetime, deletes: int,
                   seed: int) -> dict[str, pa.Table]:
    """Day-one notes/events (before ``cutoff``), the next day's new notes, and notes to delete."""
    published = notes.column("published_at")
    early = pc.less(published, pa.scalar(cutoff, published.type))
    day_one, new = notes.filter(early), notes.filter(pc.invert(early))
    before = pc.less(events.column("ts"), pa.scalar(cutoff, events.column("ts").type))
    rng = np.random.default_rng(seed)
    deleted_ids = sorted(rng.choice(day_one.column("note_id").to_pylist(), size=deletes, replace=False).tolist())
    return {"day_one_notes": day_one, "new_notes": new, "day_one_events": events.filter(before),
            "deleted": pa.table({"note_id": deleted_ids})}


def user_histories(events: pa.Table, count: int, length: int = 5) -> dict[str, list[str]]:
    """The most active users' latest clicked notes, most recent first."""
    clicks = events.filter(pc.equal(events.column("action"), "click")).sort_by([("ts", "descending")])
    histories: dict[str, list[str]] = {}
    for user, note in zip(clicks.column("user_id").to_pylist(), clicks.column("note_id").to_pylist()):
        history = histories.setdefault(user, [])
        if note not in history and len(history) < length:
            history.append(note)
    ranked = sorted(histories, key=lambda u: (-len(histories[u]), u))
    return {user: histories[user] for user in ranked[:count]}


class DemoRun:
    """The demo's stages over one output directory; each stage prints its own summary."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        out = config.out
        self.paths = {
            "notes": out / "data" / "notes", "events": out / "data" / "events",
            "new_notes": out / "data" / "next_day" / "new_notes", "deletes": out / "data" / "next_day" / "deletes",
            "cooccur": out / "cooccur", "pairs": out / "pairs", "model": out / "model",
            "table": out / "tables" / "embeddings", "index": out / "index",
        }
        self.table_url = f"parquet:{self.paths['table']}"
        self.summary: dict = {"config": {k: str(v) for k, v in asdict(config).items()}, "stage_seconds": {}}
        self.stage_number = 0

    def stage(self, title: str) -> Stage:
        self.stage_number += 1
        return Stage(self.stage_number, title, self.summary["stage_seconds"])

    def run(self) -> dict:
        from embedding import train_cli
        from i2i.testing.serving import ServerProcess
        from index import jobs as index_jobs
        from pipelines import cooccur, pairs

        self.generate()
        with self.stage("co-occurrence (Beam)"):
            job = cooccur.CooccurJob(str(self.paths["events"]), str(self.paths["cooccur"]))
            show(job)
            print(cooccur.format_summary(cooccur.run(job)))
        with self.stage("training pairs (Beam)"):
            job = pairs.PairsJob(str(self.paths["cooccur"] / "related"), str(self.paths["notes"]),
                                 str(self.paths["pairs"]), test_since=self.test_since.isoformat())
            show(job)
            print(pairs.format_summary(pairs.run(job)))
        with self.stage(f"train the representation model (NoteLLM-2, {self.config.backbone} backbones)"):
            job = train_cli.TrainJob(str(self.paths["notes"]), str(self.paths["pairs"]), str(self.paths["model"]),
                                     variant="notellm2", backbone=self.config.backbone, steps=self.config.train_steps,
                                     batch_size=self.config.batch_size, llm_layers=self.config.llm_layers or None)
            show(job)
            result = train_cli.run(job)
            print(f"trained {result.steps} steps in {result.seconds:.1f}s, loss {result.final_train_loss:.4f}; "
                  f"checkpoint {result.out_dir} model_version {result.model_version}")
        with self.stage("embed notes into the embedding table"):
            self.embed()
        with self.stage("build the FAISS IVF index"):
            job = index_jobs.IndexJob("build", str(self.paths["index"]), self.table_url)
            show(job)
            print("\n".join(index_jobs.run(job).lines()))
        with self.stage("start the recall server"):
            server = ServerProcess(self.paths["index"], self.table_url).start()
            print(f"serving on {server.address} (index {server.index_version()})")
        try:
            with self.stage("recall for a few users"):
                self.recall_for_users(server)
            with self.stage("evaluate on the test pairs"):
                from embedding import eval_cli

                job = eval_cli.EvalJob(str(self.paths["notes"]), str(self.paths["pairs"]), table=self.table_url,
                                       split="test", out=str(self.config.out / "eval"))
                show(job)
                eval_cli.run(job)
            self.next_day(server)
            with self.stage("replay the next day's clicks through the server, and write the report"):
                self.replay(server)
        finally:
            server.stop()
        return self.summary

    def embed(self) -> None:
        from embedding import embed_cli
        from embedding.embed_job import EmbedJobConfig

        job = EmbedJobConfig(str(self.paths["notes"]), str(self.paths["model"]), self.table_url)
        show(job)
        print("\n".join(f"i2i embed: {line}" for line in embed_cli.run(job).lines()))

    def generate(self) -> None:
        from i2i.app.data import fashion_notes
        from i2i.core.schemas import conform

        config = self.config
        with self.stage("generate fashion-notes"):
            world = fashion_notes.generate(fashion_notes.FashionConfig(
                notes=config.notes, users=config.users, days=config.days + 1, seed=config.seed))
            start = dt.datetime.combine(fashion_notes.FashionConfig.start, dt.time(), tzinfo=dt.timezone.utc)
            cutoff = start + dt.timedelta(days=config.days)
            self.test_since = start + dt.timedelta(days=max(config.days - 3, 1))
            parts = split_next_day(world.notes, world.events, cutoff, config.deletes, config.seed)
            write_table(conform(parts["day_one_notes"], "notes"), self.paths["notes"])
            write_events_by_day(conform(parts["day_one_events"], "events"), self.paths["events"])
            write_table(conform(parts["new_notes"], "notes"), self.paths["new_notes"])
            write_table(parts["deleted"], self.paths["deletes"])
            self.day_one_events = parts["day_one_events"]
            self.world, self.cutoff = world, cutoff
            self.titles = dict(zip(world.notes.column("note_id").to_pylist(), world.notes.column("title").to_pylist()))
            self.summary["data"] = {"notes_day_one": parts["day_one_notes"].num_rows,
                                    "events_day_one": parts["day_one_events"].num_rows,
                                    "new_notes_next_day": parts["new_notes"].num_rows,
                                    "deleted_next_day": parts["deleted"].num_rows,
                                    "real_images": world.image_source_real}
            print(json.dumps(self.summary["data"]))

    def replay(self, server) -> None:
        """The next day's users, their histories sent to the updated server, scored against their clicks."""
        from i2i.app.replay.live import replay_running_server
        from i2i.app.replay.split import split_day

        deleted = read_table(self.paths["deletes"]).column("note_id").to_pylist()
        split = split_day(self.world.notes, self.world.events, self.cutoff.date(), deleted)
        result, page = replay_running_server(split, server, "trained model", self.paths["cooccur"] / "scores",
                                             self.config.out / "replay", self.config.out / "report")
        print(result.to_markdown())
        self.summary["replay"] = {"users": len(result.cases), "table": str(self.config.out / "replay" / "replay.md"),
                                  "report": str(page)}
        print(f"report: {page}")

    def print_recall(self, user: str, history: list[str], response) -> None:
        print(f"\nuser {user}: history (most recent first)")
        for note_id in history:
            print(f"    {note_id}  {self.titles.get(note_id, '?')}")
        print(f"  recalled (index {response.index_version}, model {response.model_version[:12]}):")
        print(f"    {'#':>2}  {'note':<10} {'score':>6}  {'title':<48} from")
        for rank, note in enumerate(response.notes, 1):
            print(f"    {rank:>2}  {note.note_id:<10} {note.score:6.3f}  {self.titles.get(note.note_id, '?')[:48]:<48} "
                  f"{note.source_note_id}")

    def recall_for_users(self, server) -> None:
        shown = {}
        for user, history in user_histories(self.day_one_events, self.config.users_shown).items():
            response = server.recall(history, self.config.k, user_id=user)
            self.print_recall(user, history, response)
            shown[user] = [n.note_id for n in response.notes]
        self.summary["recall_day_one"] = shown

    def next_day(self, server) -> None:
        from embedding.table import open_table

        new_notes = read_table(self.paths["new_notes"])
        deleted = read_table(self.paths["deletes"]).column("note_id").to_pylist()
        with self.stage("next day: new notes arrive, some are deleted"):
            notes = read_table(self.paths["notes"])
            notes = notes.filter(pc.invert(pc.is_in(notes.column("note_id"), value_set=pa.array(deleted))))
            write_table(pa.concat_tables([notes, new_notes.cast(notes.schema)]), self.paths["notes"])
            print(f"{new_notes.num_rows} new notes, {len(deleted)} deleted: {', '.join(deleted)}")
        with self.stage("embed the new notes (incremental)"):
            self.embed()
        with self.stage("update the index (adds and deletes, no retraining) while the server serves"):
            from index import jobs as index_jobs

            with server.background_traffic(self.day_one_events) as traffic:
                before = server.index_version()
                job = index_jobs.IndexJob("update", str(self.paths["index"]), self.table_url,
                                          deletes=str(self.paths["deletes"]))
                show(job)
                print("\n".join(index_jobs.run(job).lines()))
                probe = next(iter(user_histories(self.day_one_events, 1).values()))
                after = server.wait_for_reload(before, probe)
            print(f"server reloaded {before} -> {after} under traffic: {traffic.ok} requests ok, "
                  f"{traffic.failed} failed")
            self.summary["reload"] = {"from": before, "to": after, "requests_ok": traffic.ok,
                                      "requests_failed": traffic.failed}
        with self.stage("recall after the update: new notes appear, deleted ones never do"):
            with open_table(self.table_url) as table:
                history, target = self.history_near_new_note(table, new_notes.column("note_id").to_pylist(), deleted)
            response = server.recall(history, self.config.k, user_id="next-day-user")
            self.print_recall("next-day-user", history, response)
            recalled = [n.note_id for n in response.notes]
            new_ids = set(new_notes.column("note_id").to_pylist())
            found_new = sorted(new_ids & set(recalled))
            found_deleted = sorted(set(deleted) & set(recalled))
            print(f"new notes recalled: {found_new or 'none'}; deleted notes recalled: {found_deleted or 'none'}")
            self.summary["recall_next_day"] = {"history": history, "recalled": recalled, "new_recalled": found_new,
                                               "deleted_recalled": found_deleted, "probe_new_note": target}
            if found_deleted:
                raise InputError(f"deleted notes were recalled after the update: {found_deleted}")
            if not found_new:
                raise InputError("no new note was recalled after the update")

    def history_near_new_note(self, table, new_ids: list[str], deleted: list[str]) -> tuple[list[str], str]:
        """A history of day-one notes whose embeddings lie closest to one new note."""
        (model_version,) = table.model_versions()
        new = table.get_many(new_ids, model_version)
        old_ids, old_vectors = [], []
        for ids, vectors in table.scan(model_version):
            keep = [i for i, note_id in enumerate(ids) if note_id not in set(new_ids) | set(deleted)]
            old_ids += [ids[i] for i in keep]
            old_vectors.append(vectors[keep])
        old = np.concatenate(old_vectors)
        target = new.found_ids[0]
        nearest = np.argsort(-(old @ new.vectors[0]))[:3]
        return [old_ids[i] for i in nearest], target


def main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="i2i demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = DemoConfig()
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    config = DemoConfig(**vars(parser.parse_args(argv)))
    started = time.perf_counter()
    summary = DemoRun(config).run()
    summary["wall_seconds"] = round(time.perf_counter() - started, 1)
    (config.out / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"\ni2i demo: done in {summary['wall_seconds']}s; outputs under {config.out} "
          f"(summary: {config.out / 'demo_summary.json'})")
    print(f"i2i demo: report of the next-day replay: {summary['replay']['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

