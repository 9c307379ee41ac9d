"""Text normalisation and PII masking, shared by training, batch scoring and serving.

`normalize` is the single function that turns a raw or anonymised buyer message into what the model
sees; a raw export (real order numbers, phones, links) and an anonymised one (`[订单x]`, `[电话x]` ...)
must look the same to the model, so both are mapped onto the same canonical tokens.

`mask_pii` is for humans: it keeps a message readable but replaces what identifies a buyer before the
text goes into logs, MLflow artifacts, reports or nudge lists.
"""

from __future__ import annotations

import re
import unicodedata

# One private-use character per canonical token: a single "character" to the char n-gram features and a
# single token to jieba, and it cannot collide with anything a buyer types.
TOKENS: dict[str, str] = {
    "order": "\ue000",
    "phone": "\ue001",
    "link": "\ue002",
    "money": "\ue003",
    "date": "\ue004",
    "number": "\ue005",
    "name": "\ue006",
    "address": "\ue007",
}
TOKEN_CHARS = frozenset(TOKENS.values())

# Placeholders written by anonymising exporters ("[订单x]", "[数字x]" ...) mapped to canonical tokens.
_PLACEHOLDER_KIND = {
    "订单": "order",
    "订单号": "order",
    "单号": "order",
    "运单": "order",
    "数字": "number",
    "链接": "link",
    "网址": "link",
    "电话": "phone",
    "手机": "phone",
    "金额": "money",
    "价格": "money",
    "日期": "date",
    "时间": "date",
    "姓名": "name",
    "名字": "name",
    "地址": "address",
    "站点": "address",
    "邮箱": "link",
    "身份证": "order",
    "身份证号": "order",
}

# Display form used by `mask_pii` (the anonymised-export convention).
_MASK = {
    "order": "[订单x]",
    "phone": "[电话x]",
    "link": "[链接x]",
    "name": "[姓名x]",
    "address": "[地址x]",
    "email": "[邮箱x]",
    "id_card": "[身份证x]",
}

_PLACEHOLDER_RE = re.compile(r"\[([\u4e00-\u9fff]{1,4}|[a-z_]{1,12})x?\d*\]")
# Every pattern below runs in time linear in the text: a repeated class may only start where a run of
# that class starts (a negative look-behind), and runs are consumed possessively, so no position is
# rescanned. A domain label is at most 63 characters (RFC 1035), which also bounds the backtracking of
# the domain branch. `tests/unit/test_text.py` normalises a megabyte of hostile text to hold this.
_URL_RE = re.compile(
    r"(?:https?://|www\.)[^\s\u4e00-\u9fff，。！？]++"
    r"|(?<![a-z0-9.-])(?:[a-z0-9-]{1,63}\.){1,8}(?:com|cn|net|tb\.cn)(?![a-z0-9-])(?:/[^\s\u4e00-\u9fff，。！？]*+)?"
    r"|¥[a-z0-9]{8,14}¥",  # Taobao share code (淘口令)
    re.IGNORECASE,
)
_EMAIL_RE = re.compile(r"(?<![a-z0-9._%+-])[a-z0-9._%+-]{1,64}+@(?:[a-z0-9-]{1,63}+\.){1,8}+[a-z]{2,24}+", re.IGNORECASE)
_ID_CARD_RE = re.compile(
    r"(?<![0-9a-z])\d{6}(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dx](?![0-9a-z])",
    re.IGNORECASE,
)
# A mobile number may follow letters (weixin13812345678, phone:138...) and use spaces, dashes or dots.
_PHONE_RE = re.compile(
    r"(?<!\d)(?:\+?86[- .]?)?1[3-9]\d(?:[- .]?\d{4}){2}(?!\d)"
    r"|(?<!\d)1[3-9]\d\*{4}\d{4}(?!\d)"
    r"|(?<!\d)0\d{2,3}-\d{7,8}(?!\d)"
)
# Order, waybill and similar identifiers: long digit runs, optionally with a courier prefix (sf, yt ...).
_ORDER_RE = re.compile(r"(?<![0-9a-z])(?:[a-z]{1,4})?\d{10,}+(?![0-9])", re.IGNORECASE)
_MONEY_RE = re.compile(
    r"[¥$]\s?\d++(?:\.\d+)?"
    r"|(?<![\d.])\d++(?:\.\d++)?\s?(?:元|块钱|块|rmb|刀)"
)
_DATE_RE = re.compile(
    r"\d{4}[-/.年]\d{1,2}[-/.月]\d{1,2}[日号]?"
    r"|\d{1,2}月\d{1,2}[日号]?"
    r"|\d{1,2}[-/]\d{1,2}(?![\d/-])"
    r"|\d{1,2}:\d{2}(?::\d{2})?"
    r"|(?<!\d)\d{1,2}[日号](?!码)"
    r"|(?<!\d)\d{1,2}点(?:\d{1,2}分?|半)?"
)
_ADDRESS_RE = re.compile(
    r"[\u4e00-\u9fff]{2,3}(?:省|自治区)[\u4e00-\u9fff]{0,10}(?:市|州|盟)?[\u4e00-\u9fff0-9]*+"
    r"|[\u4e00-\u9fff]{2,3}市[\u4e00-\u9fff]{1,8}(?:区|县)[\u4e00-\u9fff0-9]*"
    r"|[\u4e00-\u9fff]{1,10}(?:路|街|大道|巷|弄)\d++号[\u4e00-\u9fff0-9\-#]*"
)
_NAME_RE = re.compile(r"(?<=收货人|收件人|联系人)[:：\s]?[\u4e00-\u9fff]{2,3}|(?<=姓名)[:：\s]?[\u4e00-\u9fff]{2,3}")
_NUMBER_RE = re.compile(r"\d++(?:\.\d++)?")
_SPACE_RE = re.compile(r"\s+")
_REPEAT_RE = re.compile(r"(.)\1{3,}")


def _placeholder_token(match: re.Match[str]) -> str:
    kind = _PLACEHOLDER_KIND.get(match.group(1))
    if kind is None:
        return match.group(0)
    return f" {TOKENS[kind]} "


def _token(kind: str):
    replacement = f" {TOKENS[kind]} "
    return lambda _match: replacement


MAX_CHARS = 4000  # default cut of a message before normalisation (config: text.max_chars)


def normalize(text: str, max_chars: int = MAX_CHARS) -> str:
    """Canonical form of a buyer message: what every model of this project is fitted on and fed.

    Only the first `max_chars` characters are read: no real chat message is longer, and the cut bounds
    the work an untrusted message can cause."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    text = unicodedata.normalize("NFKC", text[:max_chars]).lower()
    text = _PLACEHOLDER_RE.sub(_placeholder_token, text)
    text = _EMAIL_RE.sub(_token("link"), text)
    text = _URL_RE.sub(_token("link"), text)
    text = _ID_CARD_RE.sub(_token("order"), text)
    text = _PHONE_RE.sub(_token("phone"), text)
    text = _ORDER_RE.sub(_token("order"), text)
    text = _ADDRESS_RE.sub(_token("address"), text)
    text = _NAME_RE.sub(_token("name"), text)
    text = _MONEY_RE.sub(_token("money"), text)
    text = _DATE_RE.sub(_token("date"), text)
    text = _NUMBER_RE.sub(_token("number"), text)
    text = _REPEAT_RE.sub(r"\1\1\1", text)
    return _SPACE_RE.sub(" ", text).strip()


def mask_pii(text: str) -> str:
    """Readable text with phones, order numbers, addresses, names, links and e-mails masked.

    Linear in the length of the text (see the patterns above), so it needs no cut of its own."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    text = unicodedata.normalize("NFKC", text)
    text = _EMAIL_RE.sub(_MASK["email"], text)
    text = _URL_RE.sub(_MASK["link"], text)
    text = _ID_CARD_RE.sub(_MASK["id_card"], text)
    text = _PHONE_RE.sub(_MASK["phone"], text)
    text = _ORDER_RE.sub(_MASK["order"], text)
    text = _ADDRESS_RE.sub(_MASK["address"], text)
    text = _NAME_RE.sub(_MASK["name"], text)
    return text


def has_placeholder_or_number(normalized: str) -> bool:
    return any(ch in TOKEN_CHARS for ch in normalized)


def has_latin(normalized: str) -> bool:
    return any("a" <= ch <= "z" for ch in normalized)
