"""Words of fashion-notes: the vocabularies of product attributes and the text a note is written in.

Long notes name their product (brand and line) and its attributes in varied words; short notes
use only the generic vocabulary below (``SHORT_TITLES``, ``SHORT_TOPICS``, ``FILLER_SENTENCES``),
which holds no product name, category or colour word, so only the image tells what they show.
"""
from __future__ import annotations

import numpy as np

CATEGORIES = [  # Fashion-MNIST label order
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
COLOURS = [  # name, words for it, RGB tint
    ("black", ["black", "jet black", "onyx"], (20, 20, 20)),
    ("white", ["white", "ivory", "off-white"], (235, 235, 225)),
    ("red", ["red", "scarlet", "cherry red"], (200, 30, 35)),
    ("navy", ["navy", "navy blue", "midnight blue"], (25, 40, 110)),
    ("beige", ["beige", "camel", "sand"], (205, 180, 140)),
    ("green", ["green", "forest green", "olive"], (40, 140, 60)),
    ("pink", ["pink", "blush", "rose"], (240, 130, 170)),
    ("mustard", ["mustard", "ochre", "golden yellow"], (215, 170, 30)),
]
STYLES = ["casual", "formal", "sporty", "vintage", "streetwear", "minimalist", "boho"]
MATERIALS = ["cotton", "denim", "leather", "wool", "linen", "silk", "knit", "suede"]
FITS = ["slim", "relaxed", "oversized", "regular", "cropped", "tailored"]
OCCASIONS = ["work", "party", "gym", "travel", "weekend", "wedding", "date night", "brunch", "festival"]
SEASONS = ["spring", "summer", "autumn", "winter"]
BRANDS = [
    "Velora", "Nordwyn", "Astrel", "Brisa", "Calder", "Dunmore", "Elvane", "Farrow", "Gilda", "Halsey",
    "Ivenna", "Jorvik", "Kestrel", "Lumiere", "Maren", "Novella", "Oberon", "Pellam", "Quinta", "Rovani",
    "Sable", "Tamsin", "Ulla", "Vesper", "Wrenley", "Xanthe", "Yarrow", "Zephyrine", "Amalfi", "Belcourt",
    "Corvina", "Delphine", "Esker", "Fennick", "Garnet", "Harlow", "Isola", "Juniper", "Kinsale", "Larkin",
]
LINES = [
    "Drift", "Aurora", "Summit", "Ember", "Halo", "Tide", "Meadow", "Pulse", "Orbit", "Cascade",
    "Echo", "Flint", "Glade", "Harbor", "Iris", "Jade", "Kite", "Lagoon", "Mosaic", "Nimbus",
    "Opal", "Prism", "Quill", "Ripple", "Sierra", "Tundra", "Umbra", "Vale", "Willow", "Zenith",
    "Alto", "Bloom", "Comet", "Dune", "Eclipse", "Fjord", "Grove", "Haven", "Islet", "Juno",
    "Kelp", "Lumen", "Mirage", "Nova", "Oasis", "Pebble", "Quartz", "Reef", "Solstice", "Thistle",
    "Aria", "Breeze", "Crest", "Delta", "Ether", "Falcon", "Gale", "Horizon", "Indigo", "Jasper",
    "Karma", "Lotus", "Mistral", "Nectar", "Orchard", "Pioneer", "Quest", "Rune", "Saga", "Terra",
    "Unity", "Vortex", "Wander", "Yonder", "Zest", "Atlas", "Beacon", "Cinder", "Dawn", "Everest",
]

TITLE_TEMPLATES = [
    "{brand} {line} {item} in {colour}",
    "my new {brand} {line}",
    "{colour} {item} from {brand}",
    "the {line} {item} by {brand}: honest review",
    "{style} {colour} {item} for {occasion}",
    "{brand} {line} haul: the {colour} one",
    "why the {brand} {line} is my favourite {item}",
    "{fit} {material} {item} for {season}",
    "wearing the {line} {item} to {occasion}",
]
CONTENT_SENTENCES = [
    "This {colour} {item} from {brand} is made of {material} and feels great all day.",
    "The {brand} {line} comes in a {fit} cut that suits a {style} wardrobe.",
    "I wore the {line} to {occasion} and got compliments all evening.",
    "The {material} is soft, and the {colour} shade looks even better in daylight.",
    "If you like a {style} look, the {brand} {line} {item} is a must.",
    "Ideal for {occasion}, and it works well in {season}.",
    "The fit is {fit}; I went with my usual size.",
    "Care tip: wash the {material} cold and dry it flat to keep it in shape.",
    "Compared with my old {item}, the {line} is lighter and holds its shape.",
    "Styling idea: keep the rest neutral so the {colour} stands out.",
    "{brand} got the details right on this {item}: clean seams and a {fit} shape.",
    "I was looking for a {colour} {item} for {season} and this one ticks every box.",
    "The {line} {item} is now my go-to for {occasion}.",
    "Price was fair for {material} of this quality.",
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
    "Packed it for the trip and did not regret it.",
    "My friends keep asking about it.",
    "It arrived quickly and the packaging was lovely.",
    "Not sponsored, I just really like it.",
]
SHORT_TITLES = [
    "obsessed with this", "new in", "today's pick", "can't stop wearing it", "a little treat",
    "mood", "yes or no?", "found it!", "ootd", "love love love", "finally mine", "this one",
]
SHORT_TOPICS = ["ootd", "haul", "newin", "style", "fashion", "lookbook", "musthave"]


def identifying_words() -> set[str]:
    """Every product name, category and colour word (lower case): what a short note never contains."""
    words = {w for name, synonyms in CATEGORIES for w in [name, *synonyms]}
    words |= {w for name, synonyms, _ in COLOURS for w in [name, *synonyms]}
    return {w.lower() for w in words | set(BRANDS) | set(LINES)}


def _pick(rng: np.random.Generator, items: list[str]) -> str:
    return items[int(rng.integers(len(items)))]


def long_text(rng: np.random.Generator, attrs: dict[str, int]) -> tuple[str, list[str], str]:
    """Title, topics and content of a long note about one product (``attrs`` holds its indices)."""
    brand, line = BRANDS[attrs["brand"]], LINES[attrs["line"]]
    words = {
        "brand": brand, "line": line,
        "item": _pick(rng, CATEGORIES[attrs["category"]][1]),
        "colour": _pick(rng, COLOURS[attrs["colour"]][1]),
        "style": STYLES[attrs["style"]], "material": MATERIALS[attrs["material"]], "fit": FITS[attrs["fit"]],
        "occasion": _pick(rng, OCCASIONS), "season": _pick(rng, SEASONS),
    }
    title = _pick(rng, TITLE_TEMPLATES).format(**words)
    topics = [CATEGORIES[attrs["category"]][0], COLOURS[attrs["colour"]][0], words["style"], words["occasion"],
              brand.lower(), words["material"]]
    topics = [topics[j] for j in sorted(rng.choice(len(topics), size=int(rng.integers(2, 6)), replace=False))]
    n_sentences = int(rng.integers(4, 8))
    sentences = [CONTENT_SENTENCES[j].format(**{**words, "item": _pick(rng, CATEGORIES[attrs["category"]][1]),
                                                 "colour": _pick(rng, COLOURS[attrs["colour"]][1])})
                 for j in rng.choice(len(CONTENT_SENTENCES), size=n_sentences, replace=False)]
    for _ in range(int(rng.integers(1, 5))):
        sentences.insert(int(rng.integers(len(sentences) + 1)), _pick(rng, FILLER_SENTENCES))
    return title, topics, " ".join(sentences)


def short_text(rng: np.random.Generator) -> tuple[str, list[str], str]:
    """A short note: a generic title, a few generic tags, at most two filler sentences."""
    title = _pick(rng, SHORT_TITLES)
    topics = [str(t) for t in rng.choice(SHORT_TOPICS, size=int(rng.integers(0, 3)), replace=False)]
    content = " ".join(FILLER_SENTENCES[j] for j in rng.choice(len(FILLER_SENTENCES), size=int(rng.integers(0, 3)),
                                                               replace=False))
    return title, topics, content
