"""fashion-notes v2: a semi-synthetic note platform about products, with real product photos.

The generative story (docs/datasets.md tells it in full):

1. **Products.** A product has a Fashion-MNIST photo (its category), a colour tinted into it, a
   style, a material, a fit, a made-up name (brand + line, e.g. "Velora Drift"), a popularity and
   a launch day.
2. **Notes.** Each product gets a long-tailed number of notes (most one or two, some ten or more),
   published over the days after its launch. Every note has its own photo of the product (a new
   augmentation: crop, scale, flip, rotation, tint and light jitter, background) and its own text.
   Long notes name the product and its attributes in varied words; about 10% are short notes that
   name nothing identifying, so only their image tells what they show. Some notes are deleted later.
3. **Users** follow a few interests: preferences over categories, colours and styles.
4. **Sessions.** A session stays on one interest: it picks a family (category, colour, style) from
   the user's preferences (or, exploring, at random) and an anchor product of that family, then
   shows notes of the anchor product, of its family, of its category, or popular notes (noise).
   Views are clicked with a probability that falls in that order.

So a view followed by a click (co-occurrence, paper eq. 2) mostly joins notes of the same or a
closely similar product, including short notes that only their image identifies. Everything is
vectorised with numpy (one pass per day for the events, batches for the photos).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from i2i.app.data.fashion_text import BRANDS, CATEGORIES, COLOURS, FITS, LINES, MATERIALS, STYLES, long_text, short_text
from i2i.app.data.images import ImageSource, augmented_photos, image_source, png_bytes
from i2i.core.schemas import EVENTS, NOTES

__all__ = ["CATEGORIES", "COLOURS", "FashionConfig", "FashionNotes", "generate", "attributes_table"]

DAY_S = 86_400
NEVER = np.iinfo(np.int64).max // 4
VIEW_KINDS = ("product", "family", "category", "popular")


@dataclass
class FashionConfig:
    """Sizes and behaviour of the generated platform; the defaults are the benchmark's sizes."""

    notes: int = 34_000
    users: int = 1_800
    days: int = 21
    seed: int = 0
    start: dt.date = dt.date(2026, 11, 1)
    test_days: int = 7  # the last days whose notes form the test pool (calibration only)
    short_fraction: float = 0.10
    notes_per_product_shape: float = 1.6  # Pareto shape: smaller = longer tail of notes per product
    notes_per_product_scale: float = 1.5
    max_notes_per_product: int = 40
    prelaunch_days: int = 3  # products launched up to this many days before the first day
    publish_spread_days: float = 2.0  # mean delay of a product's notes after its launch
    delete_rate: float = 0.003  # per note and day
    sessions_per_day: float = 5.0  # mean per user (activity varies log-normally)
    views_per_session: float = 7.0
    explore: float = 0.10  # share of sessions on a random family instead of the user's interests
    view_mix: tuple[float, float, float, float] = (0.75, 0.18, 0.03, 0.04)  # product, family, category, popular
    click_prob: tuple[float, float, float, float] = (0.55, 0.35, 0.20, 0.15)

    def check(self) -> None:
        from i2i.core.errors import InputError

        for name in ("notes", "users", "days"):
            if getattr(self, name) <= 0:
                raise InputError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.test_days < 0:
            raise InputError(f"--test-days must not be negative, got {self.test_days}")

    @property
    def test_since(self) -> dt.datetime:
        """Start of the test pool's period: midnight UTC ``test_days`` before the end (at most all days)."""
        return dt.datetime.combine(self.start, dt.time(), tzinfo=dt.timezone.utc) + dt.timedelta(
            days=self.days - min(self.test_days, self.days))


@dataclass
class Products:
    category: np.ndarray
    colour: np.ndarray
    style: np.ndarray
    material: np.ndarray
    fit: np.ndarray
    brand: np.ndarray
    line: np.ndarray
    photo: np.ndarray  # index into the image source's photos of the category
    popularity: np.ndarray
    launch_day: np.ndarray

    def __len__(self) -> int:
        return len(self.category)

    @property
    def family(self) -> np.ndarray:
        """(category, colour, style) as one index: products of a family are closely similar."""
        return (self.category * len(COLOURS) + self.colour) * len(STYLES) + self.style

    def name(self, p: int) -> str:
        return f"{BRANDS[self.brand[p]]} {LINES[self.line[p]]}"


@dataclass
class NoteAttributes:
    """Latent attributes of notes (parallel arrays in note id order)."""

    product: np.ndarray
    category: np.ndarray
    colour: np.ndarray
    style: np.ndarray
    short: np.ndarray
    popularity: np.ndarray
    published_day: np.ndarray  # day index (negative = before the first day)
    published_s: np.ndarray  # seconds since the first day's midnight
    deleted_day: np.ndarray  # day index of deletion, NEVER when not deleted

    def __len__(self) -> int:
        return len(self.product)


@dataclass
class FashionNotes:
    notes: pa.Table
    events: pa.Table
    deletes: pa.Table  # note_id, deleted_at
    attributes: NoteAttributes
    products: Products
    image_source_real: bool
    meta: dict = field(default_factory=dict)


def sample_products(rng: np.random.Generator, config: FashionConfig, source: ImageSource) -> tuple[Products, np.ndarray]:
    """Products and their note counts (long-tailed, summing to ``config.notes``)."""
    counts: list[np.ndarray] = []
    total = 0
    while total < config.notes:
        batch = 1 + np.floor(rng.pareto(config.notes_per_product_shape, 4096) * config.notes_per_product_scale)
        batch = np.minimum(batch, config.max_notes_per_product).astype(np.int64)
        counts.append(batch)
        total += int(batch.sum())
    count = np.concatenate(counts)
    count = count[: int(np.searchsorted(np.cumsum(count), config.notes)) + 1]
    count[-1] -= int(count.sum()) - config.notes
    n = len(count)
    category = rng.integers(0, len(CATEGORIES), n)
    photos = np.array([len(source.by_label[c]) for c in range(len(CATEGORIES))])
    products = Products(
        category=category,
        colour=rng.integers(0, len(COLOURS), n),
        style=rng.integers(0, len(STYLES), n),
        material=rng.integers(0, len(MATERIALS), n),
        fit=rng.integers(0, len(FITS), n),
        brand=rng.integers(0, len(BRANDS), n),
        line=rng.integers(0, len(LINES), n),
        photo=(rng.random(n) * photos[category]).astype(np.int64),
        popularity=rng.lognormal(0.0, 0.7, n),
        launch_day=rng.integers(-config.prelaunch_days, config.days, n),
    )
    return products, count


def sample_notes(rng: np.random.Generator, products: Products, count: np.ndarray, config: FashionConfig) -> NoteAttributes:
    """Notes of every product, ordered by publication time (note ids follow that order)."""
    product = np.repeat(np.arange(len(products)), count)
    launch = products.launch_day[product]
    room = config.days - launch  # days from launch to the end
    delay = np.floor(rng.exponential(config.publish_spread_days, len(product))).astype(np.int64) % np.maximum(room, 1)
    published_day = launch + delay
    published_s = published_day * DAY_S + rng.integers(0, 6 * 3600, len(product))
    deleted_day = published_day + 1 + rng.geometric(config.delete_rate, len(product))
    deleted_day = np.where(deleted_day < config.days, deleted_day, NEVER)
    order = np.argsort(published_s, kind="stable")
    product = product[order]
    return NoteAttributes(
        product=product,
        category=products.category[product],
        colour=products.colour[product],
        style=products.style[product],
        short=rng.random(len(product)) < config.short_fraction,
        popularity=products.popularity[product] * rng.lognormal(0.0, 0.4, len(product)),
        published_day=published_day[order],
        published_s=published_s[order],
        deleted_day=deleted_day[order],
    )


def note_texts(rng: np.random.Generator, products: Products, attrs: NoteAttributes) -> tuple[list, list, list]:
    titles, topics, contents = [], [], []
    for i in range(len(attrs)):
        if attrs.short[i]:
            title, tags, content = short_text(rng)
        else:
            p = int(attrs.product[i])
            title, tags, content = long_text(rng, {
                "brand": products.brand[p], "line": products.line[p], "category": products.category[p],
                "colour": products.colour[p], "style": products.style[p], "material": products.material[p],
                "fit": products.fit[p]})
        titles.append(title)
        topics.append(tags)
        contents.append(content)
    return titles, topics, contents


def note_images(rng: np.random.Generator, products: Products, attrs: NoteAttributes, source: ImageSource,
                batch: int = 128) -> list[bytes]:
    """One augmented photo of its product per note, as PNG bytes."""
    images: list[bytes] = []
    tints = np.array([rgb for _, _, rgb in COLOURS], dtype=np.float32)
    for start in range(0, len(attrs), batch):
        product = attrs.product[start:start + batch]
        base = np.stack([source.by_label[products.category[p]][products.photo[p]] for p in product])
        pixels = augmented_photos(base, tints[products.colour[product]], rng)
        images.extend(png_bytes(photo) for photo in pixels)
    return images


def sample_users(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Interests as cumulative preference rows (for inverse-CDF draws) and an activity level."""
    return {
        "category": np.cumsum(rng.dirichlet(np.full(len(CATEGORIES), 0.3), n), axis=1),
        "colour": np.cumsum(rng.dirichlet(np.full(len(COLOURS), 0.4), n), axis=1),
        "style": np.cumsum(rng.dirichlet(np.full(len(STYLES), 0.4), n), axis=1),
        "activity": rng.lognormal(-0.045, 0.3, n),  # mean 1
    }


def draw_rows(cumulative: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of cumulative probabilities."""
    u = rng.random((len(cumulative), 1)) * cumulative[:, -1:]
    return np.minimum((cumulative < u).sum(axis=1), cumulative.shape[1] - 1)


def grouped_choice(groups: np.ndarray, weights: np.ndarray, wanted: np.ndarray, u: np.ndarray) -> np.ndarray:
    """For each wanted group, the position of one item of that group drawn with probability ∝ weight
    (``u`` uniform in [0, 1)); -1 where the group holds no weight."""
    order = np.argsort(groups, kind="stable")
    sorted_groups, cumulative = groups[order], np.cumsum(weights[order])
    lo = np.searchsorted(sorted_groups, wanted, "left")
    hi = np.searchsorted(sorted_groups, wanted, "right")
    padded = np.concatenate([[0.0], cumulative])
    base, total = padded[lo], padded[hi] - padded[lo]
    position = np.clip(np.searchsorted(cumulative, base + u * total, "right"), lo, np.maximum(hi - 1, lo))
    found = (hi > lo) & (total > 0)
    return np.where(found, order[np.minimum(position, len(order) - 1)] if len(order) else -1, -1)


def simulate_day(rng: np.random.Generator, day: int, products: Products, attrs: NoteAttributes,
                 users: dict[str, np.ndarray], config: FashionConfig) -> tuple[np.ndarray, ...]:
    """(user, note, is_click, ts_ms) of one day's sessions."""
    live = np.flatnonzero((attrs.published_day <= day) & (attrs.deleted_day > day))
    if len(live) == 0:
        return tuple(np.empty(0, dtype=np.int64) for _ in range(4))
    age = np.maximum(day - attrs.published_day[live], 0)
    note_weight = attrs.popularity[live] * np.exp(-age / 7.0)
    live_product = attrs.product[live]
    # products with a live note, weighted by popularity and the freshness of their notes
    product_ids, first = np.unique(live_product, return_index=True)
    product_weight = np.bincount(live_product, weights=note_weight, minlength=len(products))[product_ids]

    sessions = rng.poisson(config.sessions_per_day * users["activity"])
    user = np.repeat(np.arange(len(sessions)), sessions)
    n = len(user)
    family = ((draw_rows(users["category"][user], rng) * len(COLOURS) + draw_rows(users["colour"][user], rng))
              * len(STYLES) + draw_rows(users["style"][user], rng))
    explore = rng.random(n) < config.explore
    family[explore] = products.family[product_ids[rng.integers(0, len(product_ids), int(explore.sum()))]]
    anchor = grouped_choice(products.family[product_ids], product_weight, family, rng.random(n))
    # a family without a live product: the user explores a random live product instead
    missing = anchor < 0
    anchor[missing] = rng.integers(0, len(product_ids), int(missing.sum()))
    anchor = product_ids[anchor]

    views = 2 + rng.poisson(max(config.views_per_session - 2, 0.0), n)
    slot_session = np.repeat(np.arange(n), views)
    m = len(slot_session)
    kind = np.searchsorted(np.cumsum(config.view_mix) / sum(config.view_mix), rng.random(m), "right")
    kind = np.minimum(kind, len(VIEW_KINDS) - 1)
    slot_product = anchor[slot_session]
    key = {
        0: (live_product, slot_product),
        1: (products.family[live_product], products.family[slot_product]),
        2: (products.category[live_product], products.category[slot_product]),
        3: (np.zeros(len(live), dtype=np.int64), np.zeros(m, dtype=np.int64)),
    }
    picked = np.full(m, -1, dtype=np.int64)
    for k, (groups, wanted) in key.items():
        rows = np.flatnonzero(kind == k)
        picked[rows] = grouped_choice(groups, note_weight, wanted[rows], rng.random(len(rows)))
    keep = picked >= 0
    slot_session, kind, note = slot_session[keep], kind[keep], live[picked[keep]]
    click = rng.random(len(note)) < np.asarray(config.click_prob)[kind]

    # timeline: views about 45 s apart, a click a few seconds after its view, then reading
    gap = rng.exponential(45.0, len(note)) + 1.0
    delay = rng.uniform(2.0, 15.0, len(note))
    step = gap + click * (delay + rng.exponential(90.0, len(note)))
    elapsed = np.cumsum(step) - step
    session_start = np.searchsorted(slot_session, np.arange(n), "left")
    has_slots = session_start < len(slot_session)
    offset = np.zeros(n)
    offset[has_slots] = elapsed[session_start[has_slots]]
    start_s = day * DAY_S + rng.uniform(6 * 3600, 23 * 3600, n)
    view_s = start_s[slot_session] + elapsed - offset[slot_session] + gap
    view_ms = np.floor(view_s * 1000).astype(np.int64)
    click_ms = view_ms + np.floor(delay * 1000).astype(np.int64)
    users_out = np.concatenate([user[slot_session], user[slot_session][click]])
    notes_out = np.concatenate([note, note[click]])
    clicks_out = np.concatenate([np.zeros(len(note), dtype=bool), np.ones(int(click.sum()), dtype=bool)])
    ts_out = np.concatenate([view_ms, click_ms[click]])
    return users_out, notes_out, clicks_out, ts_out


def simulate_events(rng: np.random.Generator, products: Products, attrs: NoteAttributes, note_ids: np.ndarray,
                    users: dict[str, np.ndarray], config: FashionConfig) -> pa.Table:
    parts = [simulate_day(rng, day, products, attrs, users, config) for day in range(config.days)]
    user, note, click, ts = (np.concatenate([p[i] for p in parts]) for i in range(4))
    base_ms = int(dt.datetime.combine(config.start, dt.time(), tzinfo=dt.timezone.utc).timestamp() * 1000)
    order = np.lexsort((click, ts, user))
    user_ids = np.char.add("u", np.char.zfill(user[order].astype(str), 6))
    return pa.table({
        "user_id": pa.array(user_ids, pa.string()),
        "note_id": pa.array(note_ids[note[order]], pa.string()),
        "action": pa.array(np.where(click[order], "click", "view"), pa.string()),
        "ts": pa.array(ts[order] + base_ms, pa.int64()).cast(EVENTS.field("ts").type),
    }, schema=EVENTS)


def generate(config: FashionConfig) -> FashionNotes:
    """Products, notes, events and deletions of the whole world, deterministic for ``config.seed``."""
    config.check()
    rng = np.random.default_rng(config.seed)
    source = image_source(np.random.default_rng(config.seed + 1))
    products, count = sample_products(rng, config, source)
    attrs = sample_notes(rng, products, count, config)
    note_ids = np.char.add("n", np.char.zfill(np.arange(len(attrs)).astype(str), 7))
    titles, topics, contents = note_texts(np.random.default_rng([config.seed, 1]), products, attrs)
    images = note_images(np.random.default_rng([config.seed, 2]), products, attrs, source)
    base = dt.datetime.combine(config.start, dt.time(), tzinfo=dt.timezone.utc)
    base_ms = int(base.timestamp() * 1000)
    notes = pa.table({
        "note_id": pa.array(note_ids, pa.string()), "title": titles, "topics": topics, "content": contents,
        "image": pa.array(images, pa.binary()),
        "published_at": pa.array(attrs.published_s * 1000 + base_ms, pa.int64()).cast(NOTES.field("published_at").type),
    }, schema=NOTES)
    users = sample_users(np.random.default_rng([config.seed, 3]), config.users)
    events = simulate_events(np.random.default_rng([config.seed, 4]), products, attrs, note_ids, users, config)
    deleted = np.flatnonzero(attrs.deleted_day < NEVER)
    deleted = deleted[np.argsort(attrs.deleted_day[deleted], kind="stable")]
    deletes = pa.table({
        "note_id": pa.array(note_ids[deleted], pa.string()),
        "deleted_at": pa.array(attrs.deleted_day[deleted] * DAY_S * 1000 + base_ms + 23 * 3600 * 1000,
                               pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
    })
    meta = {"generator": "fashion-notes v2", "notes": len(attrs), "products": len(products), "users": config.users,
            "days": config.days, "seed": config.seed, "start": config.start.isoformat(),
            "test_days": config.test_days, "test_since": config.test_since.isoformat(),
            "real_images": source.real, "short_notes": int(attrs.short.sum()), "events": events.num_rows,
            "deleted_notes": deletes.num_rows,
            "notes_per_product": {"max": int(count.max()), "mean": round(float(count.mean()), 2),
                                  "one": int((count == 1).sum()), "ten_or_more": int((count >= 10).sum())}}
    return FashionNotes(notes, events, deletes, attrs, products, source.real, meta)


def attributes_table(world: FashionNotes) -> pa.Table:
    """The latent attributes per note, kept beside the data for analysis (never used by the system)."""
    attrs, products = world.attributes, world.products
    product = attrs.product
    names = np.array([products.name(p) for p in range(len(products))], dtype=object)
    return pa.table({
        "note_id": world.notes.column("note_id"),
        "product_id": pa.array(np.char.add("p", np.char.zfill(product.astype(str), 6)), pa.string()),
        "product_name": pa.array(names[product], pa.string()),
        "category": pa.array([CATEGORIES[c][0] for c in attrs.category], pa.string()),
        "colour": pa.array([COLOURS[c][0] for c in attrs.colour], pa.string()),
        "style": pa.array([STYLES[s] for s in attrs.style], pa.string()),
        "material": pa.array([MATERIALS[m] for m in products.material[product]], pa.string()),
        "short": pa.array(attrs.short, pa.bool_()),
    })
