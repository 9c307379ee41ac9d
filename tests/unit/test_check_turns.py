"""One check of chat turns: the batch job's row validation, the live service and training drop the same
turns for the same reasons (the batch job additionally requires a time on every row)."""

import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.conversation import Turn
from pipeline.jobs.flag.partition import validate_chat_rows
from pipeline.nudge import NudgePolicy
from pipeline.nudge.rows import check_turns, usable_turns


@pytest.fixture(scope="module")
def policy() -> NudgePolicy:
    return NudgePolicy.from_config(load_config(overrides={"paths.data": "x"}).flag)


TURNS = [
    ("买家", "这个有货吗", "2026-11-20 21:13:05", None),
    ("客服", "有的亲", "2026-11-20 21:13:09", None),
    ("buyer", "   ", "2026-11-20 21:13:20", "missing text"),
    ("martian", "hello", "2026-11-20 21:13:30", "unknown role 'martian'"),
    ("buyer", "包邮吗", "yesterday-ish", "unparseable sent_at 'yesterday-ish'"),
    ("buyer", "乱码\ufffd\ufffd", "2026-11-20 21:14:00", "bad encoding (U+FFFD in text)"),
    ("buyer", "那我拍了", "", None),  # no time: usable live, rejected by the batch job
]


def test_reasons_name_the_first_failing_check(policy):
    roles, texts, times, expected = zip(*TURNS, strict=True)
    live = check_turns(roles, texts, times, policy, time_required=False)
    assert live.reasons.tolist() == list(expected)
    batch = check_turns(roles, texts, times, policy, time_required=True)
    assert batch.reasons.tolist() == [*expected[:-1], "missing sent_at"]
    assert live.roles.tolist()[:2] == ["buyer", "agent"]


def test_batch_rows_and_live_turns_keep_the_same_turns(policy):
    frame = pd.DataFrame(
        {
            "conversation_id": "c1",
            "buyer_id": "b1",
            "shop_id": "s1",
            "role": [t[0] for t in TURNS[:-1]],
            "text": [t[1] for t in TURNS[:-1]],
            "sent_at": [t[2] for t in TURNS[:-1]],
        }
    )
    valid, rejected = validate_chat_rows(frame, policy)
    assert [reason for _, reason in rejected] == [t[3] for t in TURNS[2:-1]]
    roles, texts, _ = usable_turns([Turn(r, x, s) for r, x, s, _ in TURNS[:-1]], policy)
    assert texts == valid["text"].tolist() and roles == valid["role"].tolist()


def test_unsorted_turns_are_used_in_time_order_when_every_turn_has_a_time(policy):
    turns = [Turn("buyer", "第二句", "2026-11-20 10:00:05"), Turn("buyer", "第一句", "2026-11-20 10:00:01")]
    assert usable_turns(turns, policy)[1] == ["第一句", "第二句"]
    without_time = [Turn("buyer", "第二句", None), Turn("buyer", "第一句", "2026-11-20 10:00:01")]
    assert usable_turns(without_time, policy)[1] == ["第二句", "第一句"]


def test_laying_many_conversations_flat_keeps_what_each_one_keeps_on_its_own(policy):
    """`lay_flat` checks every turn of a batch in one call; it must keep, order and time each conversation's
    turns exactly as `usable_turns` does for that conversation alone."""
    import random

    import numpy as np

    from pipeline.nudge.rows import lay_flat

    rng = random.Random(5)
    times = ["2026-11-20 10:00:0%d" % s for s in range(10)] + ["", None, "not a time", "1732068000"]
    roles = ["buyer", "买家", "客服", "agent", "martian", None]
    texts = ["有货吗", "   ", "好的", None, "乱\ufffd", "拍了", "1"]
    conversations = [
        [Turn(rng.choice(roles), rng.choice(texts), rng.choice(times)) for _ in range(rng.randint(0, 7))] for _ in range(300)
    ]
    flat_roles, flat_texts, starts, flat_times = lay_flat(conversations, policy)
    assert len(starts) == len(conversations) + 1 and len(flat_times) == len(conversations)
    for c, turns in enumerate(conversations):
        alone_roles, alone_texts, alone_times = usable_turns(turns, policy)
        assert flat_roles[starts[c] : starts[c + 1]] == alone_roles
        assert flat_texts[starts[c] : starts[c + 1]] == alone_texts
        assert np.array_equal(flat_times[c], alone_times)
    assert any(starts[c + 1] - starts[c] > 1 for c in range(len(conversations)))  # the case is not trivial
