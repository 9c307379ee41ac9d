"""The data card (data/README.md), rendered from figures computed on the files just written.

Prose is fixed here; every number comes from `figures`, so the card cannot drift from the data.
"""

from __future__ import annotations

from pipeline.synth.config import CorpusConfig


def _pct(value: float, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f}%"


def _rate_target(rate: float | None) -> str:
    return "every seed of an intent drawn alike, no target" if rate is None else f"target {_pct(rate)}"


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _review_section(review: dict | None) -> str:
    if not review or not review.get("agreement"):
        return ""
    a = review["agreement"]
    writers = ", ".join(f"{w} {v['kept']:,}" for w, v in review["writers"].items())
    rows = [
        [f"`{i}`", r["written"], _pct(r["agreement"]) if r["written"] else "-", f"{r['kappa']:.3f}",
         f"{r['purchase_kappa']:.3f}" if r["written"] else "-", r["kept"]]
        for i, r in a["per_intent"].items()
    ]
    status = ", ".join(f"{k} {v:,}" for k, v in sorted(a["status"].items()))
    return f"""## Corpus v2: many writers, every seed labelled twice

* **Writers**: `data/seeds/v2/<writer>.tsv`, one table per writer (an independent authoring helper with
  its own brief: JD appliance after-sales, Taobao apparel pre-sales, food, baby goods, elderly buyers,
  angry buyers, bulk and company buyers, short mid-chat replies, electronics, beauty, furniture,
  off-topic chatter; w14-w17, the third round, aimed at the plain JD register the earlier rounds lacked
  (可以/请问/好的/是的, 京东 self-operated services, answers to the agent's question) and at the
  boundaries other/complaint/after_sales and affirm/deny/place_order). They studied how real buyers
  write (length, fragments, typing habits, order cards, placeholders) in `../shared/realchat-pool` and
  never saw the real-chat dev set. Kept seeds per writer (`v1` = the first round's YAML files): {writers}.
* **Blind second label**: every v2 seed was labelled again, intent and purchase_intent, from the text
  alone, by an annotator who did not write it and did not see the first label; disagreements went to a
  third blind annotator, and the majority of the three decides each field (no majority: dropped). All
  labels are kept in the tables (`pipeline/synth/review.py`). Status: {status}.
* **Agreement of first and second label** on {a['double_labelled']:,} seeds: intent {_pct(a['intent_agreement'])},
  Cohen's kappa **{a['intent_kappa']:.3f}**; purchase_intent {_pct(a['purchase_agreement'])}, kappa **{a['purchase_kappa']:.3f}**.
  Per intent (kappa of that intent against the rest; agreement = share of the writer's seeds of that
  intent the second annotator also gave it; purchase kappa within them):

{_table(['intent', 'written', 'agreement', 'kappa', 'purchase kappa', 'kept'], rows)}
"""


def _relabel_section(review: dict | None) -> str:
    relabels = (review or {}).get("relabels") or {}
    if not relabels:
        return ""
    parts = []
    for name, r in relabels.items():
        rows = [[f"`{p}`", v["seeds"], _pct(v["share_1_before"]), _pct(v["share_1_after"])] for p, v in r["per_phenomenon"].items()]
        parts.append(f"""* **{name}** (`data/seeds/relabel/{name}.yaml`, `.tsv`): {r['seeds']:,} seeds labelled again for `{r['field']}` by
  {len(r['annotators'])} annotators ({', '.join(r['annotators'])}), two per seed; the two agree on {_pct(r['agreement'])} (kappa
  **{r['kappa']:.3f}**). Changed: {r['to_1']:,} from 0 to 1, {r['to_0']:,} from 1 to 0. Share labelled 1 by phenomenon:

{_table(['phenomenon', 'seeds', 'before', 'after'], rows)}
""")
    return """## Relabelled seeds: a line settled once across the corpus

Where the corpus and the written chats were measured to draw a label's line in different places, the seeds
showing that phenomenon (matched by the patterns in the selection file, every writer) were labelled again,
blind, from the text alone, by two annotators who had labelled none of them; a seed's label is the majority
of its settled label and the two new ones (`pipeline/synth/relabel.py`). The seed files keep their labels;
the loader applies the relabels.

""" + "\n".join(parts)


def _chats_section(chats: dict | None) -> str:
    if not chats:
        return ""
    rows = []
    for use, f in chats.items():
        a = f["agreement"]
        rows.append([f"`{use}`", ", ".join(f["writers"]), f["written"], f["settled"], f["left_out_seen"], f["kept"],
                     _pct(a["intent_agreement"]), f"{a['intent_kappa']:.3f}", f"{a['purchase_kappa']:.3f}"])
    return f"""## Written chats: whole conversations, labelled afterwards

The seeds above were written for an intent: each is a clean example of it, and the model is right on 0.91
of the held-out writers' but on about two real messages in three. In `data/seeds/chats/<use>/<writer>.tsv`
a writer imagined a buyer in a situation (what they bought or want, what went wrong, their mood, how they
type) and wrote everything that buyer sends, in order, including the messages about nothing in
particular, and labelled each message only afterwards, as it reads alone. Every message was labelled
again blind and disagreements went to a third blind annotator, as above (`pipeline/synth/review.py`).
Such text is harder: the intent agreement of two annotators is lower than on seeds written for an
intent, as on real chats. It is used as written (the generator adds nothing), in four uses with
writers of their own (`pipeline/synth/chats.py`): `train` is trained on (`paths.extra_data`), `calibration`
fits the intent model's temperature and hand-over threshold and the purchase threshold (`paths.calibration_data`),
`intent_calibration` joins it for the first two, and for the purchase threshold too under
`purchase_model.threshold_on: all_calibration_data` (the default since round 27) (`paths.intent_calibration_data`), `yardstick` is
only evaluated on (`make demo`). A use leaves out every text already in `data/messages.csv` or an earlier
use, so nothing is calibrated or measured on a text the model was fitted on. Output: `data/chats/<use>.csv`.
Writers and briefs: `data/seeds/chats/BRIEFS.md`.

{_table(['use', 'writers', 'written', 'settled', 'left out (text seen)', 'kept', 'intent agreement', 'kappa', 'purchase kappa'], rows)}
"""


def _realism_by_kind(realism: dict) -> str:
    """Each corpus stage next to real messages measured the same way: the pool is JD after-sales only, so real
    messages of another platform and stage read far from it too, and only a like-for-like pair shows the corpus's
    own distance. The AUC grows with the number of messages measured, so a real source is set beside the corpus's
    stages drawn at that source's size."""
    by_stage, real = realism.get("by_stage") or {}, realism.get("real_by_source") or {}
    if not by_stage:
        return ""
    text = "\nBy stage: " + ", ".join(f"{stage} {auc:.3f}" for stage, auc in sorted(by_stage.items())) + "."
    if not real:
        return text
    at_size = realism.get("stage_at_real_size") or {}
    pairs = []
    for source, figure in sorted(real.items()):
        stages = ", ".join(f"{stage} {auc:.3f}" for stage, auc in sorted(at_size.get(source, {}).items()))
        pairs.append(f"{source} {figure['auc']:.3f} ({figure['n']:,} messages; the corpus at that size: {stages or 'n/a'})")
    return text + (" The AUC grows with the number of messages measured, so real buyer messages (`../shared/realchat-dev`,"
                   " by source) are measured at their own size, the mean of draws, beside the corpus's stages drawn at"
                   " the same size: " + "; ".join(pairs)
                   + ". The pool is JD after-sales only, so compare a stage with the real source of the same kind.")


def _realism_section(realism: dict | None) -> str:
    if not realism:
        return ""
    per_intent = ", ".join(f"{i} {v:.3f}" for i, v in sorted(realism["per_intent"].items()))
    return f"""## Realism against real chats

Measured by `../shared/tools/realism.py` at build time (a character n-gram classifier telling these
messages from 3,037 real JD buyer messages, cross-validated on {realism['n']:,} of each; 0.5 means it
cannot tell them apart): **AUC {realism['auc']:.3f}**; messages sharing a 10-character run with a real
chat: **{realism['copies']}**. Per intent: {per_intent}.{_realism_by_kind(realism)}
Still giving the corpus away: {' '.join(f'`{g}`' for g in realism['corpus_ngrams'] if g.strip())}; real n-grams
the corpus is short of: {' '.join(f'`{g}`' for g in realism['real_ngrams'] if g.strip())}.
"""


def render_card(figures: dict, config: CorpusConfig) -> str:
    """Markdown data card for data/messages.csv, data/conversations.jsonl and data/orders.csv."""
    m, c, s, g = figures["messages"], figures["conversations"], figures["seeds"], figures["generation"]
    intents = config.intents
    per_intent = m["per_intent"]
    intent_rows = [
        [f"`{i}`", per_intent[i]["messages"], _pct(per_intent[i]["messages"] / m["messages"]), s["per_intent"].get(i, {}).get("total", 0),
         per_intent[i]["seeds"], s["per_intent"].get(i, {}).get("conversation", 0), _pct(per_intent[i]["pre_sales_share"], 0),
         _pct(per_intent[i]["purchase_intent_rate"]), per_intent[i]["distinct_3grams"], f"{per_intent[i]['median_length']:.0f}"]
        for i in intents if i in per_intent
    ]
    category_rows = [[k, m["category_counts"].get(k, 0), c["category_counts"].get(k, 0)] for k in config.messages.category_weights]
    register = m["register"]
    register_rows = [[k.replace("_", " "), _pct(v) if k.startswith("share") else f"{v:.0f}"] for k, v in register.items()]
    scenario_rows = [
        [f"`{r['scenario']}`", r["conversations"], _pct(r["expressed"], 0), _pct(r["converted"], 0)]
        for r in sorted(c["per_scenario"], key=lambda r: -r["conversations"])
    ]
    order_rows = [[k.replace("_", " "), v] for k, v in sorted(c["order_kinds"].items(), key=lambda kv: -kv[1])]
    thresholds = ", ".join(f"{t}: {_pct(v, 2)}" for t, v in m["near_duplicate_share_by_threshold"].items())
    shortfalls = g["shortfalls"]
    problems = figures.get("problems", [])
    missing = [i for i in intents if i not in s["per_intent"]]
    split = config.split
    notes = "\n".join(
        ([f"* Missing seed files when built: {', '.join(missing)}."] if missing else [])
        + ([f"* Seed authoring notes: {'; '.join(problems[:10])}{' ...' if len(problems) > 10 else ''}."] if problems else [])
    )
    buyer_intents = ", ".join(f"{k} {v}" for k, v in c["buyer_intent_counts"].items())
    review_section = _review_section(figures.get("review")) + _relabel_section(figures.get("review"))
    chats_section = _chats_section(figures.get("chats"))
    realism_section = _realism_section(figures.get("realism"))

    return f"""# Data card: buyer-intent corpus

Synthetic, labelled Chinese e-commerce customer-service data (Taobao / Tmall / JD style) for the
buyer-intent pipeline: buyer **messages** with an intent and a purchase-intent flag, whole
**conversations** with agent and bot replies, and the **orders** that tell which conversations were
lost. Everything below is generated by `buyer-intent data build`; do not edit this file by hand.

| file | rows |
|---|---|
| `data/messages.csv` | {m['messages']:,} messages from {m['groups']:,} seeds |
| `data/conversations.jsonl` | {c['conversations']:,} conversations, {c['messages']:,} messages ({c['role_counts'].get('buyer', 0):,} buyer) |
| `data/orders.csv` | {c['orders']:,} orders |

## Provenance

* **Seeds** (`data/seeds/<intent>.yaml`, format in `data/seeds/FORMAT.md`): {s['total']:,} hand-authored
  buyer messages, one file per intent, written for this project from the taxonomy
  (`../shared/taxonomy.md`) by the project's authoring helpers (AI assistants working in the lead
  engineer's session), each with its own purchase_intent label, stage and optional categories. No real
  chat, evaluation message or public corpus was copied.
* **Generator** (`pipeline/synth/`, settings in `configs/corpus.yaml`, seed {config.seed}): fills the slots
  ({{product}} {{size}} {{order}} {{phone}} ...) from per-category vocabularies, then adds chat register
  (vocatives, greetings before questions, 请问-style preambles, situation sentences, platform order
  cards and pasted product links, particles, emoji and emoticons, homophones/typos/pinyin/English
  swaps, punctuation runs, spaces, full-width characters, raw values or anonymised placeholders
  `[订单x]` `[电话x]` ...). What is added depends on the intent so labels stay right (never a question
  after `affirm`, never thanks after an acknowledgement, order cards only before questions).
  It is deterministic: same seeds + same config give the same bytes.
* **Seed holdout**: seeds whose `sha1("holdout:" + id)` falls below {config.holdout.conversation_seed_fraction}
  ({s['conversation']:,} of {s['total']:,}) are used **only** in conversations; the other {s['message']:,} only in
  messages. The conversation-level model is trained on message-model scores of conversation
  messages, which must be out-of-sample for the message model.

{review_section}
{chats_section}
{realism_section}
## Regenerate

```bash
uv run buyer-intent data build                      # messages.csv, conversations.jsonl, orders.csv, this card
uv run buyer-intent data synth --conversations 1000000 --seed 7 --out data/synth --format parquet
```

(`python -m pipeline.synth.cli build` works too.) `synth` streams any number of conversations in
chunks of {config.synth.chunk_size:,} with bounded memory, drawing on `synth.seed_pool` = `{config.synth.seed_pool}` seeds.

## Schema

`data/messages.csv`: `text` (raw buyer message, may contain line breaks), `intent` (one of the 20
below), `purchase_intent` (0/1), `group` (seed id: split by it, variants of one seed stay together),
`category` (apparel, beauty, food, baby, electronics, home), `stage` (pre_sales, after_sales).

`data/conversations.jsonl`, one conversation per line: `conversation_id`, `buyer_id`, `shop_id`,
`category`, `stage`, `scenario` (the flow that generated it), `messages` (list of `role`
buyer/agent/bot, `text`, `sent_at` ISO 8601 with +08:00; buyer messages also `intent`,
`purchase_intent`, `group`), `expressed_purchase_intent` (1 iff a buyer message has purchase_intent 1).

`data/orders.csv`: `order_id`, `buyer_id`, `shop_id`, `paid_at` (ISO 8601, +08:00). A conversation is
**lost** when its buyer paid no order at that shop from its {config.conversations.attribution_start.replace('_', ' ')} to
{config.conversations.window_hours:g} h after its last message (`flag.attribution_start` of `configs/default.yaml`). Generated orders
are paid after the last message, never mid-chat ({c['paid_during_conversation']} conversations would change label if counting
started at the last message), so both readings of the window give the same labels.

`synth --format parquet` writes `messages.parquet`: `conversation_id, buyer_id, shop_id, category,
role, text, sent_at` (timestamp, +08:00), `intent, purchase_intent` (null for agent/bot) and
`expressed_purchase_intent`, plus `orders.csv`.

## Messages

{m['messages']:,} messages; purchase_intent = 1 on **{_pct(m['purchase_intent_rate_pre_sales'])}** of pre-sales messages
({_rate_target(config.messages.pre_sales_purchase_intent_rate)}) and {_pct(m['purchase_intent_rate_after_sales'])} of after-sales ones.
Stages: {', '.join(f'{k} {v:,}' for k, v in m['stage_counts'].items())}.

{_table(['intent', 'messages', 'share', 'seeds', 'message seeds', 'conversation seeds', 'pre-sales', 'purchase_intent=1', 'distinct 3-grams', 'median chars'], intent_rows)}

{_table(['category', 'messages', 'conversations'], category_rows)}

### Register (share of messages)

{_table(['feature', 'value'], register_rows)}

### Diversity

* Distinct normalised texts: **{m['distinct_normalized']:,}** of {m['messages']:,} (exact normalised duplicates are dropped, first kept).
* Distinct character 3-grams per intent: column *distinct 3-grams* above.
* Grouped, stratified split (`pipeline.data.labelled.assign_splits`, val {split.val_fraction}, test {split.test_fraction}, seed
  {split.seed}): {', '.join(f'{k} {v:,}' for k, v in m['split'].items())}. Normalised texts in two splits: {m['normalized_texts_in_two_splits']}.
* **Near duplicates across the split**: {_pct(m['near_duplicate_share_test_vs_train'], 2)} of test messages
  ({m['near_duplicate_count_test_vs_train']}) have a training message with character-3-gram Jaccard >= {config.messages.near_duplicate_jaccard}
  (on normalised text). By threshold: {thresholds}.
* How: of {g['candidates']:,} candidate variants the generator dropped {g['exact_duplicates']:,} exact normalised duplicates and
  {g['near_duplicates']:,} near duplicates (Jaccard >= {config.messages.near_duplicate_jaccard}) of a variant of *another* seed; near
  duplicates within a seed are kept (they share a group, hence a split). {len(g['exhausted_seeds'])} seeds ran out of new
  variants and passed their quota on. Intents short of their target: {shortfalls or 'none'}.

## Conversations and orders

{c['conversations']:,} conversations ({', '.join(f'{k} {v:,}' for k, v in c['stage_counts'].items())}) by {c['buyers']:,} buyers
({c['buyers_with_several_conversations']:,} with several conversations) at {c['shops']} shops; median {c['median_messages_per_conversation']:.0f}
messages; roles {', '.join(f'{k} {v:,}' for k, v in c['role_counts'].items())}.

* Expressed purchase intent: {_pct(c['expressed_rate'])} of all conversations, {_pct(c['expressed_rate_pre_sales'])} of pre-sales ones.
* Lost pre-sales conversations: {c['lost_pre_sales']:,} ({_pct(c['lost_rate_pre_sales'])} of pre-sales); **{_pct(c['lost_pre_sales_with_intent_share'])}**
  of them expressed purchase intent (target {_pct(config.conversations.lost_with_intent_share)}, `conversations.lost_with_intent_share`).
* Of converted pre-sales conversations {_pct(c['converted_with_intent_share'])} expressed intent; the rest are buyers who
  asked a lot (`implicit_interest`) or impulse buyers.

{_table(['scenario', 'conversations', 'expressed intent', 'converted (paid here in window)'], scenario_rows)}

Scenarios: `browse_ask_buy` asks then says they will buy; `haggle_commit` 便宜点我就买; `conditional_unanswered`
包邮就拍 and nobody answers; `ask_and_leave`; `implicit_interest` asks size, stock and shipping and never
says they would buy (expressed = 0); `haggle_and_leave`; `bot_frustration` (bot fails, 转人工);
after-sales `order_tracking`, `order_change`, `return_refund`, `after_sales_service`, `complaint`,
`invoice_payment`. Buyer messages per intent in conversations: {buyer_intents}.

Orders and how they relate to conversations:

{_table(['order kind', 'orders'], order_rows)}

Noise on purpose: lost shoppers who bought at another shop within the window, or at this shop after
it; after-sales buyers with an earlier order; buyers coming back to the same shop later.

## Known biases and gaps

* Synthetic: messages are variants of {s['total']:,} authored seeds, so vocabulary and phrasing are narrower
  than real chats, and the noise model's habits (which emoji, which typos) are the author's guesses.
  Expect a drop on real chats; `../shared/realchat-dev/` is the honest check.
* Intent frequencies follow `messages.intent_weights` (greeting, affirm, product_spec ... frequent;
  invoice, human_agent rare), not measured traffic; every intent has at least {config.messages.min_per_intent}.
* One intent per message: multi-intent messages exist only in the forms the taxonomy resolves
  (greeting + question, order card + question, complaint + remedy as the seed wrote it).
* Conversations are scripted flows with template replies; agents always answer on topic, reply
  times are drawn from simple distributions, and buyer messages of one conversation come from
  independent seeds, so a flow can change subject abruptly.
* Purchase-intent labels come from seeds; the generator never adds or removes a statement of intent.
  The conversation outcome is random given the scenario, so it is learnable only as well as the
  scenario mix allows.
* Slot values (names, phones, addresses, order numbers, links) are random and fictitious.
* Categories: {', '.join(config.messages.category_weights)}, weighted by `messages.category_weights`.
{notes}

## Licence

Authored for the buyer-intent project and distributed under the repository's licence. Contains no
real personal data and no text from real chats or third-party corpora.
"""
