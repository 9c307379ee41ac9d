"""Seed derivation: every random stream is a `random.Random` seeded from the run seed and a name.

Named sub-streams keep parts independent: adding seeds to one intent does not reshuffle another
intent's messages, and conversation chunk k is the same whatever the chunk count.
"""

from __future__ import annotations

import hashlib
import random


def derive_seed(seed: int, *keys: object) -> int:
    """A 64-bit integer from the run seed and any keys, stable across processes and Python versions."""
    material = "\x1f".join([str(seed), *map(str, keys)]).encode("utf-8")
    return int.from_bytes(hashlib.sha1(material).digest()[:8], "big")


def make_rng(seed: int, *keys: object) -> random.Random:
    """An independent generator for one named part of the corpus (never the global RNG)."""
    return random.Random(derive_seed(seed, *keys))


def stable_fraction(key: str) -> float:
    """A value in [0, 1) fixed forever by `key` alone (used for the seed holdout)."""
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2**64
