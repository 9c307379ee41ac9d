"""Small English data made here (no shared data needed) for the tune and English-config tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(__file__).resolve().parents[2].parent / "shared"

_INTENTS = {
    "balance": ["what is my {acct} balance", "how much money is in my {acct}", "show the balance of my {acct}", "tell me my {acct} balance please"],
    "transfer": ["send {amt} dollars to my {acct}", "move {amt} from savings to my {acct}", "transfer {amt} into my {acct}", "please wire {amt} to the {acct}"],
    "card_lost": ["i lost my {card} card", "my {card} card was stolen", "someone took my {card} card", "cannot find my {card} card anywhere"],
    "weather": ["what is the weather in {city}", "will it rain in {city} today", "how hot is it in {city}", "forecast for {city} this weekend"],
}
_FILL = {
    "acct": ["checking", "savings", "joint account", "business account"],
    "amt": ["20", "fifty", "100", "a thousand"],
    "card": ["debit", "credit", "visa", "travel"],
    "city": ["paris", "boston", "tokyo", "lima"],
}


def english_messages(per_template: int = 4) -> pd.DataFrame:
    """text,intent,group: templates filled with slot values; one group per message."""
    rows = []
    for intent, templates in _INTENTS.items():
        for t_index, template in enumerate(templates):
            for index in range(per_template):
                values = {name: options[(index + t_index) % len(options)] for name, options in _FILL.items()}
                rows.append({"text": template.format(**values), "intent": intent, "group": f"{intent}-{t_index}-{index}"})
    return pd.DataFrame(rows)


@pytest.fixture()
def english_csv(tmp_path) -> Path:
    path = tmp_path / "english.csv"
    english_messages().to_csv(path, index=False)
    return path
