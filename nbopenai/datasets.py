"""Small, realistic, generated data sets for the example notebooks: nothing to download.

``product_reviews()`` gives a few hundred customer reviews of six products from a made-up shop, the
same ones on every machine (a seeded generator, no data file). Each has the store's metadata
(id, date, product, star rating) and the free text a customer wrote, which is what an extraction
reads. The text is built from what the reviewer meant (their main complaint, if any, and whether
they recommend the product); ``labels=True`` returns that too, so an extraction can be scored.

The wording keeps each complaint to its own sentence and praise free of complaint words, so the
offline demo model, which matches words, extracts it about as well as a real model would.

Examples
--------
>>> from nbopenai.datasets import product_reviews
>>> reviews = product_reviews()
>>> len(reviews), list(reviews.columns)
(300, ['review_id', 'date', 'product', 'rating', 'text'])

pandas is imported when a data set is built, not when this module is.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas

__all__ = ["COMPLAINTS", "PRODUCTS", "product_reviews"]

COMPLAINTS = ("battery", "noise", "fit", "delivery", "price", "durability")
"""What a review can mainly complain about (the ``complaint`` label; ``None`` for no complaint)."""

# product -> (complaints it can draw, praise sentences). Praise avoids every complaint word.
_CATALOGUE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Aurora wireless headphones": (
        ("battery", "fit", "durability", "price", "delivery"),
        (
            "The sound is rich and the bass is tight without drowning the vocals.",
            "Pairing with my phone took seconds.",
            "Active cancelling shuts out the rumble of the train.",
            "They fold flat and the case is compact.",
            "Calls sound clear; my colleagues hear me well.",
            "The ear cushions are soft even after a long flight.",
        ),
    ),
    "Brewmaster electric kettle": (
        ("noise", "durability", "price", "delivery"),
        (
            "It boils a full litre in under three minutes.",
            "The temperature presets are perfect for green tea.",
            "The handle stays cool and the lid opens with one hand.",
            "Keep-warm mode holds the water hot for half an hour.",
            "It looks great on the counter.",
            "The water window is easy to read.",
        ),
    ),
    "Trailhead 28L backpack": (
        ("fit", "durability", "price", "delivery"),
        (
            "The laptop sleeve holds a 15-inch machine snugly.",
            "Plenty of pockets, and the bottle holders are deep.",
            "It kept everything dry in a proper downpour.",
            "The hip belt takes the weight off my shoulders on long hikes.",
            "Zips run smoothly and the fabric feels tough.",
            "It passes as cabin luggage on every airline I tried.",
        ),
    ),
    "Lumen desk lamp": (
        ("durability", "price", "delivery", "noise"),
        (
            "The light is warm and even, with flicker-free dimming.",
            "The arm stays exactly where I put it.",
            "The USB port on the base charges my phone overnight.",
            "It looks sleek on my desk.",
            "The touch controls are intuitive.",
            "My eyes feel less tired after evening work.",
        ),
    ),
    "Stride running shoes": (
        ("fit", "durability", "price", "delivery"),
        (
            "The cushioning is superb on long runs.",
            "They are light and breathe well in summer.",
            "Grip on wet pavement is reassuring.",
            "They felt comfortable from the very first run.",
            "The reflective details help on dark evenings.",
            "My knees thank me after a half marathon.",
        ),
    ),
    "Grindwell coffee grinder": (
        ("noise", "durability", "price", "delivery"),
        (
            "The grind is consistent from espresso to French press.",
            "Cleaning takes two minutes with the included brush.",
            "Forty settings, and each one is repeatable.",
            "Beans to cup in under a minute.",
            "It takes up little room on the counter.",
            "The timer doses the same amount every morning.",
        ),
    ),
}

PRODUCTS = tuple(_CATALOGUE)
"""The six products reviewed (the ``product`` column's categories, in this order)."""

# complaint -> sentences naming it (each contains the complaint's word, and only that one).
_COMPLAINT_SENTENCES: dict[str, tuple[str, ...]] = {
    "battery": (
        "The battery barely lasts a working day.",
        "Battery life is far below the advertised 30 hours.",
        "After two months the battery drains overnight even when switched off.",
    ),
    "noise": (
        "The noise is unbearable at seven in the morning.",
        "It makes a high-pitched noise that the whole flat can hear.",
        "There is a constant rattling noise while it works.",
    ),
    "fit": (
        "The fit is too tight; I had to go up a size.",
        "The fit is awkward and it pinches after an hour.",
        "I struggled with the fit from day one.",
    ),
    "delivery": (
        "Delivery took almost three weeks.",
        "The delivery arrived with a crushed box and a missing manual.",
        "The delivery driver left it in the rain.",
    ),
    "price": (
        "For the price I expected much better build quality.",
        "The price went up by a third a week after I ordered.",
        "It is hard to justify the price next to the competition.",
    ),
    "durability": (
        "Durability is poor: a part snapped after a month.",
        "Durability is a problem; it started to fall apart within weeks.",
        "I have doubts about durability, as something already feels loose.",
    ),
}

_RECOMMEND_YES = (
    "I would recommend it to anyone.",
    "Highly recommend.",
    "Would happily recommend it to a friend.",
    "I recommend it wholeheartedly.",
)
_RECOMMEND_NO = (
    "I would not recommend it.",
    "I can't recommend it.",
    "Would not recommend.",
    "I do not recommend this one.",
)
_RECOMMEND_MILD = (
    "I'd still recommend it, with reservations.",
    "I'd recommend it, but only on sale.",
)
_OPENERS = (
    "Bought this last month.",
    "Bought it in the spring sale.",
    "Got it as a birthday present.",
    "Had it for three months now.",
    "Ordered it to replace an old one.",
    "Had it for about a year now.",
    "",
    "",
    "",
)
_LETDOWNS = ("Very disappointed.", "What a letdown.", "Sending it back.", "Save your money.")
_MINOR = ("Only gripe: ", "One small thing: ", "My one complaint: ")
_CLOSERS = ("Four stars overall.", "Otherwise happy.", "Mostly happy with it.", "")


def _review(rng: random.Random, product: str, rating: int) -> tuple[str, str | None, bool | None]:
    """One review's text, its main complaint and whether it recommends (``None``: not said)."""
    complaints, praise = _CATALOGUE[product]
    chance_of_complaint = {5: 0.0, 4: 0.4, 3: 0.9, 2: 1.0, 1: 1.0}[rating]
    complaint = rng.choice(complaints) if rng.random() < chance_of_complaint else None
    praise_count = {5: 3, 4: 2, 3: 1, 2: 1, 1: 0}[rating]
    sentences = [rng.choice(_OPENERS), *rng.sample(praise, praise_count)]
    if complaint is not None:
        said = rng.choice(_COMPLAINT_SENTENCES[complaint])
        if rating == 4:
            said = rng.choice(_MINOR) + said[0].lower() + said[1:]
        sentences.append(said)
    if rating <= 2:
        sentences.append(rng.choice(_LETDOWNS))
    recommends: bool | None
    if rng.random() < 0.8:
        recommends = rating >= 4 or (rating == 3 and rng.random() < 0.5)
        choices = _RECOMMEND_NO if not recommends else _RECOMMEND_MILD if rating == 3 else _RECOMMEND_YES
        sentences.append(rng.choice(choices))
    else:
        recommends = None
    if rating == 4:
        sentences.append(rng.choice(_CLOSERS))
    return " ".join(s for s in sentences if s), complaint, recommends


def product_reviews(n: int = 300, *, seed: int = 7, labels: bool = False) -> pandas.DataFrame:
    """``n`` customer reviews of six products, the same for the same ``n`` and ``seed``.

    Parameters
    ----------
    n
        How many reviews.
    seed
        The generator's seed: another seed, other reviews.
    labels
        Also return what each reviewer meant: ``complaint`` (one of ``COMPLAINTS`` or missing) and
        ``recommends`` (missing when the text does not say), to score an extraction against.

    Returns
    -------
    pandas.DataFrame
        ``review_id`` (index-like string), ``date``, ``product`` (categorical), ``rating`` (1 to 5
        stars, as the store shows them) and ``text``; plus the two labels with ``labels=True``.
    """
    import pandas as pd  # noqa: PLC0415 - pandas loads when a frame is made

    rng = random.Random(seed)
    products = list(PRODUCTS)
    first_day = dt.date(2025, 1, 1)
    rows = []
    for _ in range(n):
        product = rng.choice(products)
        rating = rng.choices((5, 4, 3, 2, 1), weights=(38, 27, 14, 9, 12))[0]
        text, complaint, recommends = _review(rng, product, rating)
        rows.append({
            "date": first_day + dt.timedelta(days=rng.randrange(365)),
            "product": product,
            "rating": rating,
            "text": text,
            "complaint": complaint,
            "recommends": recommends,
        })
    frame = pd.DataFrame(rows)
    frame["date"] = pd.to_datetime(frame["date"])
    frame["product"] = pd.Categorical(frame["product"], categories=products)
    frame["rating"] = frame["rating"].astype("Int64")
    frame["text"] = frame["text"].astype("string")
    frame["complaint"] = pd.Categorical(frame["complaint"], categories=COMPLAINTS)
    frame["recommends"] = frame["recommends"].astype("boolean")
    frame = frame.sort_values("date", kind="stable").reset_index(drop=True)
    frame.insert(0, "review_id", [f"R{number + 1:04d}" for number in range(len(frame))])
    return frame if labels else frame.drop(columns=["complaint", "recommends"])
