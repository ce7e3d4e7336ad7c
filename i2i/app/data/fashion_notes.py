"""fashion-notes: a semi-synthetic note platform with real product photos and latent attributes.

The generative story (docs/datasets.md tells it in full):

1. Every note is a garment with latent attributes: a category (the Fashion-MNIST label of its
   photo), a colour (tinted into the photo), a style, an occasion, a season and a material.
   Its title, topics and content are written from those attributes; about 10% of notes are
   *short*: a few words that name neither category nor colour, so only the image tells what
   they are (the paper's short notes).
2. Every user has latent interests: a few favourite categories, colours and styles.
3. Each day a user opens sessions; a session has a theme (a category, colour and style drawn
   from the user's interests) and shows published notes that fit the theme, more popular notes
   more often. The user views them in order and clicks the ones that match their interests.

So notes that are viewed and then clicked together (co-occurrence, paper eq. 2) tend to share
attributes, including the colour that short notes show only in their image.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from i2i.app.data.images import ImageSource, image_source, tinted_png
from i2i.core.schemas import EVENTS, NOTES

CATEGORIES = [
    ("t-shirt", ["tee", "t-shirt", "top"]),
    ("trousers", ["trousers", "pants", "slacks"]),
    ("pullover", ["pullover", "sweater", "jumper"]),
    ("dress", ["dress", "frock", "gown"]),
    ("coat", ["coat", "overcoat", "jacket"]),
    ("sandals", ["sandals", "slides", "flip-flops"]),
    ("shirt", ["shirt", "button-down", "blouse"]),
    ("sneakers", ["sneakers", "trainers", "running shoes"]),
    ("bag", ["bag", "tote", "handbag"]),
    ("ankle boots", ["ankle boots", "booties", "chelsea boots"]),
]
COLOURS = [
    ("black", (20, 20, 20)),
    ("white", (235, 235, 225)),
    ("red", (200, 30, 35)),
    ("navy", (25, 40, 110)),
    ("beige", (205, 180, 140)),
    ("green", (40, 140, 60)),
    ("pink", (240, 130, 170)),
    ("mustard", (215, 170, 30)),
]
STYLES = ["casual", "formal", "sporty", "vintage", "streetwear", "minimalist", "boho"]
OCCASIONS = ["work", "party", "gym", "travel", "weekend", "wedding", "date night"]
SEASONS = ["spring", "summer", "autumn", "winter"]
MATERIALS = ["cotton", "denim", "leather", "wool", "linen", "silk", "knit"]

TITLE_TEMPLATES = [
    "{style} {colour} {item} for {occasion}",
    "my new {colour} {item}",
    "{colour} {material} {item}, perfect for {season}",
    "the {style} {item} I wear every {occasion_day}",
    "{item} haul: {colour} and {style}",
]
CONTENT_SENTENCES = [
    "This {colour} {item} is made of {material} and feels great all day.",
    "I paired it with simple accessories for a {style} look.",
    "Ideal for {occasion}, and it works well in {season}.",
    "The fit is true to size; I went with my usual size.",
    "The {material} is soft, and the {colour} shade looks even better in daylight.",
    "If you like a {style} wardrobe, this {item} is a must.",
    "I have worn it to {occasion} three times already.",
    "Care tip: wash it cold and dry it flat to keep the {material} in shape.",
    "Compared with my old {item}, this one is lighter and holds its shape.",
    "Styling idea: keep the rest neutral so the {colour} stands out.",
]
FILLER_SENTENCES = [
    "Honestly the weather has been all over the place this week.",
    "Coffee first, outfit second, that is the rule.",
    "Let me know in the comments what you think.",
    "Saving this for later so I remember where I found it.",
    "Weekend plans: long walks and good food.",
    "Trying to build a capsule wardrobe this year.",
    "Photos do not do it justice.",
    "Shopping less but buying better is my new motto.",
]
SHORT_TITLES = [
    "obsessed with this", "new in", "today's pick", "can't stop wearing it", "a little treat",
    "mood", "yes or no?", "found it!", "ootd", "love love love",
]
SHORT_TOPICS = ["ootd", "haul", "newin", "style", "fashion"]


@dataclass
class FashionConfig:
    notes: int = 2000
    users: int = 500
    days: int = 14
    seed: int = 0
    start: dt.date = dt.date(2026, 11, 1)
    short_fraction: float = 0.10
    prior_fraction: float = 0.4  # notes already published before the first day
    sessions_per_day: float = 1.0
    views_per_session: float = 7.0


@dataclass
class NoteAttributes:
    """Latent attributes of notes, as parallel integer arrays."""

    category: np.ndarray
    colour: np.ndarray
    style: np.ndarray
    occasion: np.ndarray
    season: np.ndarray
    material: np.ndarray
    short: np.ndarray
    popularity: np.ndarray
    published_day: np.ndarray  # day index (negative = before the first day)

    def __len__(self) -> int:
        return len(self.category)


@dataclass
class UserInterests:
    category: np.ndarray  # (users, 10) probabilities
    colour: np.ndarray  # (users, 8)
    style: np.ndarray  # (users, 7)
    activity: np.ndarray  # (users,) sessions/day multiplier


@dataclass
class FashionNotes:
    notes: pa.Table
    events: pa.Table
    attributes: NoteAttributes
    image_source_real: bool
    meta: dict = field(default_factory=dict)


def sample_attributes(rng: np.random.Generator, n: int, config: FashionConfig, first_day: int = 0,
                      last_day: int | None = None) -> NoteAttributes:
    """Attributes of ``n`` notes published between ``first_day`` and ``last_day`` (day indices)."""
    last_day = config.days - 1 if last_day is None else last_day
    prior = rng.random(n) < (config.prior_fraction if first_day == 0 else 0.0)
    published = np.where(prior, -rng.integers(1, 30, n), rng.integers(first_day, last_day + 1, n))
    return NoteAttributes(
        category=rng.integers(0, len(CATEGORIES), n),
        colour=rng.integers(0, len(COLOURS), n),
        style=rng.integers(0, len(STYLES), n),
        occasion=rng.integers(0, len(OCCASIONS), n),
        season=rng.integers(0, len(SEASONS), n),
        material=rng.integers(0, len(MATERIALS), n),
        short=rng.random(n) < config.short_fraction,
        popularity=rng.lognormal(0.0, 0.8, n),
        published_day=published,
    )


def _words(rng: np.random.Generator, attrs: NoteAttributes, i: int) -> dict[str, str]:
    synonyms = CATEGORIES[attrs.category[i]][1]
    return {
        "item": synonyms[rng.integers(len(synonyms))],
        "colour": COLOURS[attrs.colour[i]][0],
        "style": STYLES[attrs.style[i]],
        "occasion": OCCASIONS[attrs.occasion[i]],
        "occasion_day": ["day", "weekend", "week"][rng.integers(3)],
        "season": SEASONS[attrs.season[i]],
        "material": MATERIALS[attrs.material[i]],
    }


def write_text(rng: np.random.Generator, attrs: NoteAttributes, i: int) -> tuple[str, list[str], str]:
    """Title, topics and content of note ``i``; short notes name neither category nor colour."""
    if attrs.short[i]:
        title = SHORT_TITLES[rng.integers(len(SHORT_TITLES))]
        topics = list(rng.choice(SHORT_TOPICS, size=rng.integers(0, 3), replace=False))
        content = "" if rng.random() < 0.5 else ["so good", "link soon", "thoughts?"][rng.integers(3)]
        return title, topics, content
    words = _words(rng, attrs, i)
    title = TITLE_TEMPLATES[rng.integers(len(TITLE_TEMPLATES))].format(**words)
    topics = [CATEGORIES[attrs.category[i]][0], words["style"], words["colour"], words["occasion"]]
    topics = [topics[j] for j in sorted(rng.choice(len(topics), size=rng.integers(2, 5), replace=False))]
    n_sentences = rng.integers(2, 7)
    sentences = [CONTENT_SENTENCES[j].format(**words)
                 for j in rng.choice(len(CONTENT_SENTENCES), size=n_sentences, replace=False)]
    for _ in range(rng.integers(0, 4)):
        sentences.insert(rng.integers(len(sentences) + 1), FILLER_SENTENCES[rng.integers(len(FILLER_SENTENCES))])
    return title, topics, " ".join(sentences)


def make_notes_table(rng: np.random.Generator, attrs: NoteAttributes, note_ids: list[str], source: ImageSource,
                     start: dt.date) -> pa.Table:
    titles, topics, contents, images, published = [], [], [], [], []
    base = dt.datetime.combine(start, dt.time(), tzinfo=dt.timezone.utc)
    for i in range(len(attrs)):
        title, note_topics, content = write_text(rng, attrs, i)
        titles.append(title)
        topics.append(note_topics)
        contents.append(content)
        gray = source.pick(int(attrs.category[i]), rng)
        images.append(tinted_png(gray, COLOURS[attrs.colour[i]][1]))
        seconds = int(attrs.published_day[i]) * 86400 + int(rng.integers(0, 6 * 3600))
        published.append(base + dt.timedelta(seconds=seconds))
    return pa.table(
        {"note_id": note_ids, "title": titles, "topics": topics, "content": contents,
         "image": images, "published_at": published},
        schema=NOTES,
    )


def sample_users(rng: np.random.Generator, n: int) -> UserInterests:
    return UserInterests(
        category=rng.dirichlet(np.full(len(CATEGORIES), 0.25), n),
        colour=rng.dirichlet(np.full(len(COLOURS), 0.4), n),
        style=rng.dirichlet(np.full(len(STYLES), 0.4), n),
        activity=rng.lognormal(0.0, 0.5, n),
    )


def simulate_events(rng: np.random.Generator, attrs: NoteAttributes, note_ids: list[str], users: UserInterests,
                    config: FashionConfig, first_day: int = 0, last_day: int | None = None) -> pa.Table:
    """Sessions of views and clicks for days ``first_day..last_day`` (see the module docstring)."""
    last_day = config.days - 1 if last_day is None else last_day
    base_ms = int(dt.datetime.combine(config.start, dt.time(), tzinfo=dt.timezone.utc).timestamp() * 1000)
    user_col, note_col, action_col, ts_col = [], [], [], []
    for day in range(first_day, last_day + 1):
        published = np.flatnonzero(attrs.published_day <= day)
        if len(published) == 0:
            continue
        freshness = np.exp(-np.maximum(day - attrs.published_day[published], 0) / 20.0)
        base_weight = attrs.popularity[published] * (0.5 + freshness)
        sessions = rng.poisson(config.sessions_per_day * users.activity)
        for user in np.flatnonzero(sessions):
            for _ in range(sessions[user]):
                theme_cat = rng.choice(len(CATEGORIES), p=users.category[user])
                theme_col = rng.choice(len(COLOURS), p=users.colour[user])
                theme_sty = rng.choice(len(STYLES), p=users.style[user])
                match = (2.5 * (attrs.category[published] == theme_cat)
                         + 1.2 * (attrs.colour[published] == theme_col)
                         + 0.8 * (attrs.style[published] == theme_sty))
                weight = base_weight * np.exp(match)
                n_views = min(len(published), 2 + rng.poisson(config.views_per_session - 2))
                shown = rng.choice(published, size=n_views, replace=False, p=weight / weight.sum())
                affinity = (users.category[user, attrs.category[shown]] * 4
                            + users.colour[user, attrs.colour[shown]] * 2
                            + users.style[user, attrs.style[shown]])
                click = rng.random(n_views) < 1 / (1 + np.exp(-(3.0 * affinity - 2.0)))
                t = base_ms + day * 86_400_000 + int(rng.integers(6 * 3600, 23 * 3600)) * 1000
                for note, clicked in zip(shown, click):
                    t += int(rng.exponential(45_000)) + 1000
                    user_col.append(f"u{user:06d}")
                    note_col.append(note_ids[note])
                    action_col.append("view")
                    ts_col.append(t)
                    if clicked:
                        t += int(rng.integers(2_000, 15_000))
                        user_col.append(f"u{user:06d}")
                        note_col.append(note_ids[note])
                        action_col.append("click")
                        ts_col.append(t)
                        t += int(rng.exponential(90_000))  # reading the opened note
    ts = pa.array(ts_col, pa.int64()).cast(EVENTS.field("ts").type)
    return pa.table({"user_id": user_col, "note_id": note_col, "action": action_col, "ts": ts}, schema=EVENTS)


def generate(config: FashionConfig) -> FashionNotes:
    """Notes and events of the whole world, deterministic for ``config.seed``."""
    rng = np.random.default_rng(config.seed)
    source = image_source(np.random.default_rng(config.seed + 1))
    attrs = sample_attributes(rng, config.notes, config)
    note_ids = [f"n{i:07d}" for i in range(config.notes)]
    notes = make_notes_table(rng, attrs, note_ids, source, config.start)
    users = sample_users(rng, config.users)
    events = simulate_events(rng, attrs, note_ids, users, config)
    meta = {"notes": config.notes, "users": config.users, "days": config.days, "seed": config.seed,
            "start": config.start.isoformat(), "real_images": source.real,
            "short_notes": int(attrs.short.sum()), "events": events.num_rows}
    return FashionNotes(notes, events, attrs, source.real, meta)


def attributes_table(note_ids: list[str], attrs: NoteAttributes) -> pa.Table:
    """The latent attributes, kept beside the data for analysis (never used by the system)."""
    return pa.table({
        "note_id": note_ids,
        "category": [CATEGORIES[c][0] for c in attrs.category],
        "colour": [COLOURS[c][0] for c in attrs.colour],
        "style": [STYLES[s] for s in attrs.style],
        "occasion": [OCCASIONS[o] for o in attrs.occasion],
        "short": attrs.short,
    })
