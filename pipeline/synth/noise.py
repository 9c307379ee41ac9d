"""Chat register: turns a filled seed into what buyers actually type, without changing its labels.

What may be added depends on the intent family, following the taxonomy's rules: a greeting or a
platform card may precede a question (rules 2, 3, 7) but never an `affirm`; thanks may follow a
question but never an acknowledgement (rule 4 would make it `thanks`); nothing is appended that
states a wish to buy, so purchase_intent is the seed's. Context sentences are stage-aware ("received
it yesterday" only after delivery) so a pre-sales question never becomes after-sales.
"""

from __future__ import annotations

import random
import re

from pipeline.synth.config import NoiseSettings
from pipeline.synth.vocab import SlotFiller

QUESTION_INTENTS = frozenset({
    "product_spec", "size_fit", "stock", "price_promo", "place_order", "shipping_time", "logistics",
    "order_change", "payment", "invoice", "return_refund", "after_sales", "human_agent",
})
VENT_INTENTS = frozenset({"complaint"})
SOCIAL_INTENTS = frozenset({"greeting", "thanks", "affirm", "deny", "other"})
REPEATABLE_INTENTS = frozenset({"greeting", "thanks", "affirm", "deny"})
# "received it" context is only true after delivery; "ordered it" only once paid but is harmless to rule 5
RECEIVED_CONTEXT_INTENTS = frozenset({"after_sales", "return_refund", "complaint", "product_spec"})
ORDERED_CONTEXT_INTENTS = frozenset({"shipping_time", "logistics", "order_change", "payment", "invoice"})
NO_CONTEXT_INTENTS = frozenset({"human_agent"})
# a seed that is itself a pasted platform card keeps the platform's spelling
_CARD_RE = re.compile(r"订单号[:：]|下单时间|订单金额|实付款|订单信息|商品名称")
# The anonymiser's placeholders as the generator writes them ([订单x], [地址x] ...): bounded, no nesting, linear.
# One group, so that `split` keeps them: typed text at even indices, placeholders at odd ones.
_PLACEHOLDER_RE = re.compile(r"(\[[^\[\]]{1,12}x\])")

VOCATIVES = ("亲", "亲亲", "老板", "客服", "掌柜的", "小姐姐", "宝", "美女", "kf", "亲爱的", "店家", "小哥哥", "老板娘")
GREETINGS = ("在吗", "你好", "在不在", "hello", "您好", "哈喽", "hi", "有人吗", "在吗在吗", "亲在吗", "你好呀", "在？", "喂", "客服在吗", "老板在吗", "在么", "hi亲")
# separators as the real export shows them: a space, a comma or nothing; ! ~ and 。 are rare in buyer turns
GREETING_SEPARATORS = (" ", " ", " ", "，", "，", ",", "?", "?", "  ", "", "")
VOCATIVE_SEPARATORS = (" ", " ", "，", "，", ",", "  ", "", "")
PREAMBLES = ("请问", "问下", "想问一下", "咨询下", "麻烦问一下", "打扰一下", "那个", "额", "emm", "我想问问", "问一哈",
             "想咨询个事", "我问下哈", "请问一下", "问个问题", "冒昧问一下", "嗯 想问下", "诶", "就是", "那啥")
PRE_SALES_CONTEXT = ("我看了好久了", "朋友推荐来的", "刚刷到你们直播间", "对比了好几家", "第一次在你家看", "我是老客户了",
                     "之前买过你家的东西", "看了评价说还不错", "同事也在你家买过", "刚从首页点进来的", "在小红书上看到的",
                     "这款我看了一下", "看详情页没写清楚", "详情页看了半天没找到", "我先问清楚再说")
ORDERED_CONTEXT = ("{date}拍的", "前几天下的单", "我上周拍的", "订单号{order}", "我{date}买的", "昨天拍的",
                   "我拍了{qty}", "刚刚付的款", "我是{name}")
RECEIVED_CONTEXT = ("昨天刚收到", "今天收到货了", "到货两天了", "用了一周", "{date}收到的", "拆开看了下", "刚签收",
                    "快递今天到的", "我买的东西到了", "东西收到了")
POLITE_TAILS = ("谢谢", "谢谢亲", "麻烦了", "麻烦看下", "辛苦了", "在线等", "急", "急急急", "求回复", "等你回复哈", "thx",
                "谢谢啦", "麻烦尽快回复", "看到回一下", "多谢", "感谢", "拜托了", "pls")
VENT_TAILS = ("无语了", "气死了", "服了", "太差了吧", "真的会谢", "第一次遇到", "下次不来了", "坑人", "心累", "醉了",
              "什么玩意", "太离谱了", "无语子", "我真的服", "吐了")
ORDER_CARDS = (
    "咨询订单号:{order} 订单金额:{amount} 下单时间:{paid}",
    "[订单信息] 订单号：{order} 商品：{product} 实付：{amount} 状态：{status}",
    "订单号:{order}\n商品名称:{product} {spec}\n实付款:{amount}\n订单状态:{status}",
    "【订单】{product} {color} x1 {amount} 订单编号{order}",
    "订单编号：{order}\n成交时间：{paid}\n交易状态：{status}",
    "咨询订单：{order}（{product}）",
    "订单号 {order} 金额 {amount} {status}",
    "我要咨询的订单\n{product}\n订单号：{order}\n{status}",
    # the cards JD's web and app clients insert (platform text, not the buyer's words)
    "咨询订单号:{order} 商品ID:{item}",
    "[订单编号:{order}，订单金额:{amount}，下单时间:{paid}]",
    "订单号: {order}",
)
ORDER_STATUS = {
    "shipping_time": ("买家已付款", "待发货", "等待卖家发货"),
    "order_change": ("买家已付款", "待发货", "等待卖家发货"),
    "logistics": ("卖家已发货", "运输中", "已发货", "派送中"),
    "payment": ("买家已付款", "交易成功", "待发货"),
}
RECEIVED_STATUS = ("交易成功", "已签收", "买家已确认收货", "已收货")
PRODUCT_CARDS = ("{link}", "【商品】{product} {price} {link}", "咨询商品：{product} ¥{price}", "{link} 这个",
                 "[商品卡片] {product} {spec} {price}", "宝贝链接：{link}")
PARTICLES_QUESTION = ("呢", "呢", "啊", "吧", "哦")
PARTICLES_STATEMENT = ("哦", "啊", "吧", "了", "啦", "呢")
_QUESTION_END = ("吗", "么", "嘛", "呢", "吧", "不", "没", "否", "啊", "呀", "哈", "哦", "啦")
EMOJI_GENERAL = ("😂", "🙏", "😊", "😭", "🤔", "👍", "😅", "💕", "🥺", "😄", "🤣", "😘", "[微笑]", "[捂脸]", "[调皮]",
                 "[可怜]", "[疑问]", "[抱拳]", "[爱心]", "[偷笑]", "[憨笑]", "[呲牙]", "[流泪]", "[OK]", "^_^", "QAQ",
                 "orz", "T_T", "o(╥﹏╥)o", "(๑•̀ㅂ•́)و✧", ":)", "：）", "=。=", "-_-||", "(＾▽＾)", "╮(╯▽╰)╭",
                 "[握手]", "[害羞]", "[机智]", "[皱眉]", "🤷", "😳", "👀", "✌️", "[旺柴]", "[让我看看]")
EMOJI_ANGRY = ("😡", "😤", "🙄", "😠", "[发怒]", "[撇嘴]", "[白眼]", "[抓狂]", "[鄙视]", "😒", "💢",
               "(╯‵□′)╯︵┻━┻", "-_-", "😓", "😭", "[流泪]", "🤬")
EMOJI_HAPPY = ("😊", "🙏", "👍", "💕", "🌹", "[玫瑰]", "[爱心]", "[抱拳]", "[握手]", "[微笑]", "😘", "❤️", "[OK]",
               "^_^", "[耶]", "😁", "🥰", "✨", "[呲牙]", "(^_^)", "💐")
# (written form, what a buyer types instead): homophones, typos, pinyin initials, English swaps
TYPOS = (
    ("在吗", "再吗"), ("在吗", "在么"), ("在吗", "在嘛"), ("在吗", "zai吗"), ("在不在", "再不再"), ("什么", "啥"),
    ("什么", "神马"), ("什么", "sm"), ("什么", "什莫"), ("怎么", "咋"), ("怎么", "怎莫"), ("怎么", "zm"),
    ("怎么样", "咋样"), ("这个", "这哥"), ("这个", "zhege"), ("这个", "这"), ("那个", "拿个"), ("没有", "木有"),
    ("没有", "没得"), ("没有", "米有"), ("有没有", "有木有"), ("有没有", "有么有"), ("可以", "阔以"), ("可以", "可"),
    ("可以", "ky"), ("知道", "造"), ("一下", "一哈"), ("一下", "下"), ("谢谢", "谢啦"), ("谢谢", "3q"), ("谢谢", "xx"),
    ("谢谢", "蟹蟹"), ("谢谢", "thx"), ("谢谢", "谢了"), ("谢谢", "xiexie"), ("好的", "好滴"), ("好的", "好哒"),
    ("好的", "hd"), ("好的", "ok"), ("好的", "好de"), ("好的", "haode"), ("发货", "发或"), ("发货", "法货"),
    ("发货", "fa货"), ("快递", "快滴"), ("快递", "kd"), ("客服", "kf"), ("现在", "xz"), ("嗯", "恩"), ("嗯", "en"),
    ("哦", "喔"), ("哦", "噢"), ("呢", "捏"), ("呢", "呐"), ("吧", "8"), ("朋友", "盆友"), ("喜欢", "稀饭"),
    ("这样", "酱紫"), ("东西", "东东"), ("尺码", "尺吗"), ("尺码", "size"), ("衣服", "衣副"), ("退货", "退或"),
    ("多少钱", "多钱"), ("多少", "多小"), ("是不是", "系不系"), ("的", "滴"), ("的", "地"), ("的", "得"),
    ("吗", "嘛"), ("吗", "么"), ("吗", "马"), ("你们", "你门"), ("已经", "以经"), ("还是", "还使"), ("质量", "质两"),
    ("付款", "付宽"), ("地址", "地扯"), ("优惠", "优会"), ("便宜", "便易"), ("订单", "定单"), ("订单", "单子"),
    ("物流", "无流"), ("价格", "价钱"), ("哈哈", "hhh"), ("哈哈", "233"), ("哈哈", "hh"), ("笑死", "xs"), ("亲", "qin"),
    ("为什么", "为啥"), ("为什么", "why"), ("不知道", "不晓得"), ("不知道", "bzd"), ("收到", "收道"), ("麻烦", "麻番"),
    ("链接", "链 接"), ("链接", "lj"), ("颜色", "色"), ("没问题", "no problem"), ("拜拜", "bye"), ("拜拜", "88"),
    ("帮我", "pls帮我"), ("一样", "一羊"), ("现在", "先在"), ("在线", "再线"),
    ("衣服", "yf"), ("宝贝", "bb"), ("确认", "qr"), ("安装", "按装"), ("型号", "形号"), ("售后", "sh"), ("换货", "换或"),
)
_CLAUSE_QUESTION_END = frozenset("吗么嘛呢")
_PUNCT_END = re.compile(r"[？?！!。.~～，,、…]+$")
_ASCII_TO_FULL = {c: chr(ord(c) + 0xFEE0) for c in map(chr, range(0x21, 0x7F))}
_FULL_PUNCT_TO_ASCII = str.maketrans({"，": ",", "？": "?", "！": "!", "：": ":", "（": "(", "）": ")"})


_EXPORTED_PUNCT = str.maketrans({"\n": " ", "\r": " ", ",": "，", "？": "?"})


def as_exported(text: str) -> str:
    """What the JD chat export makes of a typed message (the real pool has no line breaks, no ASCII
    commas and no full-width question marks): line breaks become spaces, commas full-width, question
    marks ASCII. The model's normaliser (NFKC) reads both forms the same; this is about how the corpus
    looks next to real exports."""
    return text.translate(_EXPORTED_PUNCT)


def order_card(filler: SlotFiller, intent: str, rng: random.Random) -> str:
    """The card a platform inserts when a buyer consults about an order (rule 7: ignored before a question)."""
    return rng.choice(ORDER_CARDS).format(
        order=filler.value("order"),
        product=filler.product,
        spec=filler.value("spec"),
        color=filler.value("color"),
        amount=filler.placeholder("price") if filler.masked("price") else filler.card_amount(),
        paid=filler.placeholder("date") if filler.masked("date") else filler.card_time(),
        status=rng.choice(ORDER_STATUS.get(intent, RECEIVED_STATUS)),
        item=filler.placeholder("num") if filler.masked("num") else str(rng.randint(10**7, 10**12)),
    )


def _pick_emoji(intent: str, rng: random.Random) -> str:
    pool = EMOJI_ANGRY if intent == "complaint" else EMOJI_HAPPY if intent in ("thanks", "affirm") else EMOJI_GENERAL
    count = 1 if rng.random() < 0.75 else rng.randint(2, 3)
    first = rng.choice(pool)
    if count > 1 and rng.random() < 0.6 and not first.startswith("["):
        return first * count  # 😂😂😂
    return "".join(rng.choice(pool) for _ in range(count))


def _split_end(text: str) -> tuple[str, str]:
    match = _PUNCT_END.search(text)
    return (text[: match.start()], match.group(0)) if match else (text, "")


def add_particle(text: str, intent: str, rng: random.Random) -> str:
    """好的 -> 好的哈, 什么时候发货 -> 什么时候发货呢 (not after 吗/呢/吧 or an emoji)."""
    body, end = _split_end(text)
    if not body or body.endswith(_QUESTION_END) or not ("\u4e00" <= body[-1] <= "\u9fff"):
        return text
    pool = PARTICLES_QUESTION if intent in QUESTION_INTENTS else PARTICLES_STATEMENT
    return body + rng.choice(pool) + end


def _typed_positions(written: str, text: str) -> list[int]:
    """Where `written` starts in what the buyer typed: never inside an anonymiser's placeholder."""
    inside = [(m.start(), m.end()) for m in _PLACEHOLDER_RE.finditer(text)]
    return [
        m.start()
        for m in re.finditer(re.escape(written), text)
        if not any(start < m.end() and m.start() < end for start, end in inside)
    ]


def add_typos(text: str, rng: random.Random) -> str:
    """One or two homophone / typo / pinyin swaps at places the buyer typed: the exporter writes its
    placeholders ([地址x], [订单x] ...) itself, so a typo never lands inside one."""
    candidates = [pair for pair in TYPOS if _typed_positions(pair[0], text)]
    if not candidates:
        return text
    for written, typed in rng.sample(candidates, k=min(len(candidates), 1 if rng.random() < 0.8 else 2)):
        positions = _typed_positions(written, text)
        if not positions:
            continue
        at = rng.choice(positions)
        text = text[:at] + typed + text[at + len(written):]
    return text


def restyle_punctuation(text: str, intent: str, rng: random.Random) -> str:
    """End punctuation as real exports show it (measured on the real pool: about 3 messages in 5 carry
    no punctuation, 1 in 40 ends with 。): mostly nothing or a plain ? on questions, a full stop now and
    then, rarely a run (?? / 。。。); ! . … and ~ are rare in real buyer turns."""
    body, end = _split_end(text)
    choice = rng.random()
    asks = intent in QUESTION_INTENTS or "?" in end or "？" in end
    if choice < 0.45:
        end = ""  # questions without question marks
    elif asks and choice < 0.8:
        end = rng.choice(("?", "?", "?", "?", "？", "??"))
    elif intent in VENT_INTENTS and choice < 0.8:
        end = rng.choice(("！", "!", "？？？", "。。。", "", ""))
    elif choice < (0.84 if asks else 0.52):
        end = rng.choice(("。", "。", "。", "。", "。。。", "…"))
    elif choice < 0.93:
        pass  # as written
    else:
        text = text.translate(_FULL_PUNCT_TO_ASCII)
        return text
    return body + end


def commas_for_spaces(text: str, rng: random.Random) -> str:
    """Buyers who do punctuate separate clauses with a comma (，/,) where a space stood, and mostly with
    a ? after a question particle (在吗? 想问下...)."""

    def separator(match: re.Match) -> str:
        if match.group(1) in _CLAUSE_QUESTION_END and rng.random() < 0.6:
            return match.group(1) + rng.choice(("?", "?", "? "))
        return match.group(1) + rng.choice(("，", "，", ","))

    return re.sub(r"([\u4e00-\u9fff\]])\s(?=[\u4e00-\u9fff\[])", separator, text)


def spaces_for_punctuation(text: str, rng: random.Random) -> str:
    """Many buyers separate clauses with spaces instead of commas."""
    return re.sub(r"[，,。]\s*", lambda _m: " " if rng.random() < 0.85 else "  ", text)


def to_fullwidth(text: str) -> str:
    """What a full-width input method makes of the buyer's typing; the exporter's placeholders stay as written."""
    parts = _PLACEHOLDER_RE.split(text)
    return "".join(part if i % 2 else "".join(_ASCII_TO_FULL.get(c, c) for c in part) for i, part in enumerate(parts))


def repeat_short(text: str, rng: random.Random) -> str:
    """在吗在吗 / 好的好的 / 谢谢 谢谢."""
    body, end = _split_end(text)
    return body + rng.choice(("", " ", "，", "！", "？" if body.endswith("吗") else "~")) + body + end


class NoiseModel:
    """Adds register to filled seeds; `apply` keeps the seed's intent and purchase_intent."""

    def __init__(self, settings: NoiseSettings):
        self.p = settings

    def _join(self, left: str, right: str, rng: random.Random) -> str:
        if not left:
            return right
        if rng.random() < self.p.newline:
            return left + "\n" + right
        if left[-1] in "？?！!。，,~～ ":
            return left + ("" if rng.random() < 0.6 else " ") + right
        return left + rng.choice((" ", " ", "，", "，", "，", ",", "。", "  ", "")) + right

    def apply(self, body: str, intent: str, stage: str, filler: SlotFiller, rng: random.Random) -> str:
        p = self.p
        if rng.random() < p.clean:
            return body
        text = body
        family_question = intent in QUESTION_INTENTS
        if intent in REPEATABLE_INTENTS and len(text) <= 4 and rng.random() < p.repeat_short:
            text = repeat_short(text, rng)
        if rng.random() < p.particle and not _CARD_RE.search(body):
            text = add_particle(text, intent, rng)

        before: list[str] = []
        after: list[str] = []
        budget = p.max_additions if rng.random() < p.long else 1
        if family_question or intent in VENT_INTENTS:
            if family_question and rng.random() < p.preamble:
                before.append(rng.choice(PREAMBLES))
            if rng.random() < p.context and intent not in NO_CONTEXT_INTENTS:
                if stage == "pre_sales" and intent not in RECEIVED_CONTEXT_INTENTS - {"product_spec"}:
                    before.insert(0, filler.fill(rng.choice(PRE_SALES_CONTEXT)))
                elif stage == "after_sales" and intent in RECEIVED_CONTEXT_INTENTS:
                    before.insert(0, filler.fill(rng.choice(RECEIVED_CONTEXT)))
                elif stage == "after_sales" and intent in ORDERED_CONTEXT_INTENTS:
                    before.insert(0, filler.fill(rng.choice(ORDERED_CONTEXT)))
            if rng.random() < p.greeting_prefix:
                before.insert(0, rng.choice(GREETINGS))
            if family_question and rng.random() < p.polite_tail:
                after.append(rng.choice(POLITE_TAILS))
            if intent in VENT_INTENTS and rng.random() < p.vent_tail:
                after.append(rng.choice(VENT_TAILS))
        if rng.random() < p.vocative and not before:
            before.append(rng.choice(VOCATIVES))
        while len(before) + len(after) > budget:
            (before if before and (not after or rng.random() < 0.5) else after).pop(0 if rng.random() < 0.5 else -1)

        for part in reversed(before):
            if part in GREETINGS:
                text = part + rng.choice(GREETING_SEPARATORS) + text
            elif part in VOCATIVES:
                text = part + rng.choice(VOCATIVE_SEPARATORS) + text
            else:
                text = self._join(part, text, rng)
        for part in after:
            text = self._join(text, part, rng)

        if rng.random() < p.typo and not _CARD_RE.search(body):
            text = add_typos(text, rng)
        if rng.random() < p.punctuation:
            text = restyle_punctuation(text, intent, rng)
        if "~" in text or "～" in text:  # seeds written with a tilde; real buyer turns almost never carry one
            text = re.sub(r"[~～]+", lambda _m: rng.choice(("", "", " ", "。")), text)
        if rng.random() < p.spaces:
            text = spaces_for_punctuation(text, rng)
        elif rng.random() < p.commas:
            text = commas_for_spaces(text, rng)
        if rng.random() < p.emoji:
            emoji = _pick_emoji(intent, rng)
            text = emoji + text if rng.random() < 0.1 else text + ("" if rng.random() < 0.7 else " ") + emoji
        if rng.random() < p.fullwidth:
            text = to_fullwidth(text)
        # platform cards are inserted by the client, so they carry none of the buyer's typing habits
        if (family_question or intent in VENT_INTENTS) and not _CARD_RE.search(body):
            if stage == "after_sales" and rng.random() < p.order_card:
                text = order_card(filler, intent, rng) + rng.choice(("\n", "\n", " ", "  ")) + text
            elif stage == "pre_sales" and rng.random() < p.product_card:
                text = filler.fill(rng.choice(PRODUCT_CARDS)) + rng.choice(("\n", " ", "  ")) + text
        return text.strip() or body
