"""The data card's realism figures: each corpus stage, and real messages of each source measured the same way, beside
the corpus's stages drawn at that source's size (the AUC grows with the sample)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd

from pipeline.synth.card import _realism_section
from pipeline.synth.cli import realism_figures
from pipeline.synth.config import load_corpus_config

ROOT = Path(__file__).resolve().parents[2]

# A stand-in for ../shared/tools/realism.py: the "AUC" of a set is its share of texts containing 售后 plus a
# thousandth per message measured, so each figure says which texts, and how many, it was computed on.
FAKE_TOOL = textwrap.dedent(
    """
    from pathlib import Path
    SHARED = Path(__file__).resolve().parent.parent
    POOL = SHARED / "realchat-pool" / "messages.csv"
    DEV = SHARED / "realchat-dev" / "messages.csv"

    def realism_auc(corpus, real, seed=0, top=25):
        corpus = list(corpus)
        return sum("售后" in t for t in corpus) / len(corpus) + len(corpus) / 1000, min(len(corpus), len(real)), ["x"], ["y"]

    def copies(corpus, references):
        return [(t, t) for t in corpus if t in set(references)]
    """
)


def _project(tmp_path: Path, dev_sources: bool = True):
    project, shared = tmp_path / "project", tmp_path / "shared"
    (project / "configs").mkdir(parents=True)
    (project / "configs" / "corpus.yaml").write_bytes((ROOT / "configs" / "corpus.yaml").read_bytes())
    (shared / "tools").mkdir(parents=True)
    (shared / "tools" / "realism.py").write_text(FAKE_TOOL, encoding="utf-8")
    (shared / "realchat-pool").mkdir()
    pd.DataFrame({"text": ["售后怎么申请"] * 150}).to_csv(shared / "realchat-pool" / "messages.csv", index=False)
    (shared / "realchat-dev").mkdir()
    dev = pd.DataFrame({"text": ["售后电话"] * 120 + ["有货吗"] * 100 + ["在吗"] * 20,
                        "source": ["jd"] * 120 + ["taobao"] * 100 + ["tiny"] * 20})
    if not dev_sources:
        dev = dev.drop(columns="source")
    dev.to_csv(shared / "realchat-dev" / "messages.csv", index=False)
    return load_corpus_config(project / "configs" / "corpus.yaml")


def _messages() -> pd.DataFrame:
    texts = ["售后寄回"] * 150 + ["尺码多大"] * 150 + ["在吗"] * 50
    stages = ["after_sales"] * 150 + ["pre_sales"] * 150 + ["rare"] * 50
    return pd.DataFrame({"text": texts, "intent": ["after_sales"] * 150 + ["size_fit"] * 200, "stage": stages})


def test_each_stage_and_each_real_source_is_measured_alone(tmp_path: Path) -> None:
    figures = realism_figures(_project(tmp_path), _messages(), log=lambda line: None)
    assert figures["by_stage"] == {"after_sales": 1.15, "pre_sales": 0.15}  # "rare" has under 100 messages
    # each real source at its own size; "tiny" has under 100 messages
    assert figures["real_by_source"] == {"jd": {"n": 120, "auc": 1.12}, "taobao": {"n": 100, "auc": 0.1}}
    # the corpus's stages drawn at each source's size, not at their own
    assert figures["stage_at_real_size"] == {"jd": {"after_sales": 1.12, "pre_sales": 0.12},
                                             "taobao": {"after_sales": 1.1, "pre_sales": 0.1}}
    assert figures["auc"] == round(150 / 350 + 350 / 1000, 3)


def test_a_dev_set_without_sources_gives_no_reference(tmp_path: Path) -> None:
    figures = realism_figures(_project(tmp_path, dev_sources=False), _messages(), log=lambda line: None)
    assert figures["real_by_source"] == {} and figures["by_stage"]


def test_the_card_sets_each_real_source_beside_the_corpus_at_its_size() -> None:
    realism = {"auc": 0.888, "n": 3037, "copies": 0, "per_intent": {"affirm": 0.98}, "corpus_ngrams": ["拍"], "real_ngrams": ["好"],
               "by_stage": {"pre_sales": 0.919, "after_sales": 0.887},
               "real_by_source": {"jd_after_sales": {"n": 420, "auc": 0.518}, "taobao_pre_sales": {"n": 180, "auc": 0.938}},
               "stage_at_real_size": {"jd_after_sales": {"after_sales": 0.798, "pre_sales": 0.858},
                                      "taobao_pre_sales": {"after_sales": 0.754, "pre_sales": 0.823}}}
    section = _realism_section(realism)
    assert "By stage: after_sales 0.887, pre_sales 0.919." in section
    assert "jd_after_sales 0.518 (420 messages; the corpus at that size: after_sales 0.798, pre_sales 0.858)" in section
    assert "taobao_pre_sales 0.938 (180 messages; the corpus at that size: after_sales 0.754, pre_sales 0.823)" in section
    # figures without stages still render, without the comparison
    older = {k: v for k, v in realism.items() if k not in ("by_stage", "real_by_source", "stage_at_real_size")}
    assert "By stage" not in _realism_section(older) and "AUC 0.888" in _realism_section(older)
