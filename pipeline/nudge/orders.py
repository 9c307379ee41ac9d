"""Orders: which buyers paid at which shop and when, held as sorted int64 arrays and queried vectorised."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from pipeline.times import MISSING_TIME


def buyer_shop_keys(buyer_ids: Sequence[Any], shop_ids: Sequence[Any]) -> np.ndarray:
    """A stable 64-bit key per (buyer, shop): the orders index stays 16 bytes an order."""
    buyers = pd.Series(np.asarray(buyer_ids, dtype=object)).astype(str)
    shops = pd.Series(np.asarray(shop_ids, dtype=object)).astype(str)
    joined = (buyers + "\x1f" + shops).to_numpy(dtype=object)
    return pd.util.hash_array(joined)


class OrdersIndex:
    """buyer+shop -> sorted paid_at times, held as two int64 arrays; queries are vectorised."""

    def __init__(self, keys: np.ndarray, paid_at_ms: np.ndarray):
        keys = np.asarray(keys, dtype=np.uint64)
        paid = np.asarray(paid_at_ms, dtype=np.int64)
        order = np.lexsort((paid, keys))
        self.keys = keys[order]
        self.paid_at_ms = paid[order]
        self.unique_keys, self.key_starts = np.unique(self.keys, return_index=True)
        self._composite: np.ndarray | None = None
        if len(paid):
            self.t_min = int(paid.min())
            self.span = int(paid.max()) - self.t_min + 1
            rank = np.searchsorted(self.unique_keys, self.keys)
            if len(self.unique_keys) * self.span < 2**62:
                self._composite = rank.astype(np.int64) * self.span + (self.paid_at_ms - self.t_min)

    @classmethod
    def from_arrays(cls, buyer_ids: Sequence[Any], shop_ids: Sequence[Any], paid_at_ms: Sequence[int]) -> "OrdersIndex":
        return cls(buyer_shop_keys(buyer_ids, shop_ids), np.asarray(paid_at_ms, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.paid_at_ms)

    def save(self, path) -> None:
        with open(path, "wb") as handle:
            np.savez(handle, keys=self.keys, paid_at_ms=self.paid_at_ms)

    @classmethod
    def load(cls, path) -> "OrdersIndex":
        with np.load(path) as data:
            return cls(data["keys"], data["paid_at_ms"])

    def any_paid_between(self, keys: np.ndarray, start_ms: np.ndarray, end_ms: np.ndarray) -> np.ndarray:
        """For each query: is there an order with that key paid in [start, end] (both inclusive)?"""
        keys = np.asarray(keys, dtype=np.uint64)
        start_ms = np.asarray(start_ms, dtype=np.int64)
        end_ms = np.asarray(end_ms, dtype=np.int64)
        hit = np.zeros(len(keys), dtype=bool)
        if not len(self.paid_at_ms) or not len(keys):
            return hit
        pos = np.searchsorted(self.unique_keys, keys)
        pos_clipped = np.minimum(pos, len(self.unique_keys) - 1)
        found = (pos < len(self.unique_keys)) & (self.unique_keys[pos_clipped] == keys)
        found &= (start_ms != MISSING_TIME) & (end_ms != MISSING_TIME) & (start_ms <= end_ms)
        if self._composite is not None:
            rel_start = np.clip(start_ms - self.t_min, 0, self.span)
            rel_end = np.clip(end_ms - self.t_min, -1, self.span - 1)
            base = pos_clipped.astype(np.int64) * self.span
            at = np.searchsorted(self._composite, base + rel_start, side="left")
            at_clipped = np.minimum(at, len(self._composite) - 1)
            hit = found & (at < len(self._composite)) & (self._composite[at_clipped] <= base + rel_end)
            return hit
        ends = np.append(self.key_starts[1:], len(self.keys))
        for i in np.flatnonzero(found):  # spans too wide for the composite key: per query
            segment = self.paid_at_ms[self.key_starts[pos[i]] : ends[pos[i]]]
            j = np.searchsorted(segment, start_ms[i], side="left")
            hit[i] = j < len(segment) and segment[j] <= end_ms[i]
        return hit
