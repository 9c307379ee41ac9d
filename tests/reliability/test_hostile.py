"""Hostile input through the real jobs: every bad line is quarantined with its reason, the run finishes,
rows in = used + rejected, and the good rows decide exactly as without the bad ones."""

from __future__ import annotations

import json

import pandas as pd

from tests.batch.builders import flat_rows, write_conversation_jsonl, write_orders

from .conftest import error_lines, run

TIME = ",2024-05-01T10:00:00+08:00\n"
CLEAN_FLAGGED = {"c1", "c3", "c4", "c5", "c7", "c9"}  # tests/batch/test_flag.py: the fixture's nudge list
HOSTILE_CSV_LINES = {  # conversation id -> (line, the reason it is rejected; None: used)
    "c40": (b"c40,b40,s1,food,buyer," + b"," * 3_000_000 + TIME.encode(), "expected 7 fields, found 3000007"),  # a 3 MB line of fields
    "c41": (b"c41,b41,s1,food,buyer,\xe6\x88\x91\x00\x00\xe8\xa6\x81" + TIME.encode(), "NUL byte in text"),
    "c42": (b"c42,b\x0042,s1,food,buyer,\xe6\x88\x91\xe8\xa6\x81\xe4\xba\x86" + TIME.encode(), "NUL byte in buyer_id"),
    "c43": (b"c43,b43,s1,food,buyer,\xc3\x28\xa0\xa1\xff" + TIME.encode(), "bad encoding"),
    "c45": (b"c45,b45,s1,food,buyer," + ("我要了" * 1_200_000).encode() + TIME.encode(), None),  # one 10.8 MB message
    "c44": (b'c44,b44,s1,food,buyer,"never closed' + TIME.encode(), "expected 7 fields, found 6"),  # last: an open quote runs to the end
}


def _flagged(path) -> set[str]:
    return set(pd.read_csv(path, dtype=str, keep_default_na=False)["conversation_id"])


def test_hostile_lines_in_a_chat_export_are_quarantined_and_the_run_finishes(tmp_path, flag_bundle_dir, job_files):
    chats = tmp_path / "chats.csv"
    chats.write_bytes(flat_rows().to_csv(index=False).encode() + b"".join(line for line, _ in HOSTILE_CSV_LINES.values()))
    orders = write_orders(tmp_path / "orders.csv")
    out = tmp_path / "out" / "nudges.csv"
    # timeout: main hung on one 1 MB message (no finish in 120 s); here the 10.8 MB one is cut to text.max_chars
    result = run(["flag", "--chats", chats, "--orders", orders, "--out", out, "--model", flag_bundle_dir, "--config", job_files["config"], "--json"], timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["rows"] | {"rejected_reasons": None, "rejected_file": None} == {
        "in": 28 + 6, "used": 28 + 1, "rejected": 5, "balanced": True, "rejected_reasons": None, "rejected_file": None}
    rejected = pd.read_csv(out.with_name("nudges.csv.rejected.csv"), dtype=str, keep_default_na=False, encoding="utf-8-sig")
    reasons = " | ".join(rejected["reason"])
    for _, reason in HOSTILE_CSV_LINES.values():
        if reason:
            assert reason in reasons
    written = out.read_bytes() + out.with_name("nudges.csv.rejected.csv").read_bytes()
    assert b"\x00" not in written  # not in the nudge list a CRM imports, nor in the quarantine file
    assert _flagged(out) == CLEAN_FLAGGED | {"c45"}  # the 10 MB message is read (cut to text.max_chars) and scored
    assert max(len(line) for line in out.read_text(encoding="utf-8-sig").splitlines()) < 2000


def test_hostile_records_in_a_conversation_jsonl_are_quarantined_and_the_run_finishes(tmp_path, flag_bundle_dir, job_files):
    """main lost the whole run to a RecursionError traceback on one deeply nested line (even as a later line)."""
    good = write_conversation_jsonl(tmp_path / "good.jsonl").read_text(encoding="utf-8")
    head = '{"conversation_id": "d%d", "buyer_id": "bd%d", "shop_id": "s1", "messages": '
    message = '{"role": "buyer", "text": %s, "sent_at": "2024-05-01T10:00:00+08:00"}'
    nested_list = head % (1, 1) + "[" * 200_000 + "]" * 200_000 + "}\n"
    nested_text = head % (2, 2) + "[" + message % ('{"a":' * 100_000 + "1" + "}" * 100_000) + "]}\n"
    nul_text = head % (3, 3) + "[" + message % '"\\u0000我要了"' + "]}\n"
    huge_text = head % (4, 4) + "[" + message % json.dumps("便宜点我就买了" * 500_000, ensure_ascii=False) + "]}\n"  # 10.5 MB
    chats = tmp_path / "chats.jsonl"
    chats.write_text(nested_list + good + nested_text + nul_text + huge_text, encoding="utf-8")
    out = tmp_path / "out" / "nudges.csv"
    result = run(["flag", "--chats", chats, "--orders", write_orders(tmp_path / "orders.csv"), "--out", out,
                  "--model", flag_bundle_dir, "--config", job_files["config"], "--json"], timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["input"]["format"] == "conversations"  # a hostile first line does not decide the layout
    assert summary["rows"]["balanced"] and summary["rows"]["rejected"] == 3
    assert summary["rows"]["rejected_reasons"] == {"NUL byte in text": 1, "not valid JSON: nested too deeply": 2}
    assert _flagged(out) == CLEAN_FLAGGED | {"d4"}


def test_hostile_lines_given_to_predict_are_quarantined_and_the_rest_scored(tmp_path, flag_bundle_dir):
    source = tmp_path / "messages.csv"
    source.write_bytes(
        "text,shop\n在吗,s1\n".encode()
        + b"," * 2_000_000 + b"\n"  # a 2 MB line of empty fields
        + b"\xc3\x28\xa0\xff,s1\n"  # not UTF-8 (nor GB18030)
        + ("我要了" * 1_200_000).encode() + b",s1\n"  # a 10.8 MB message
        + "有货我就要,s1\n".encode()
    )
    out = tmp_path / "scored.csv"
    result = run(["predict", "--input", source, "--output", out, "--model", flag_bundle_dir], timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scored 3 rows" in result.stdout and "2 rejected" in result.stdout
    scored = pd.read_csv(out, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert scored["intent"].tolist()[0] == "greeting" and scored["purchase_intent"].tolist()[1:] == ["1", "1"]
    rejected = pd.read_csv(f"{out}.rejected.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert len(rejected) == 2 and all(rejected["reason"].str.len() > 0)
    assert not error_lines(result.stderr)
