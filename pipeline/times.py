"""Clock times and time zones of the settings (quiet hours, the shop's zone)."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

MS_PER_DAY = 86_400_000


def parse_clock(text: str) -> int:
    """'22:00' -> milliseconds after midnight."""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", str(text).strip())
    if not match or int(match.group(1)) > 24 or int(match.group(2)) > 59:
        raise ValueError(f"expected HH:MM, got {text!r}")
    return (int(match.group(1)) * 60 + int(match.group(2))) * 60_000 % MS_PER_DAY


def parse_timezone(text: str) -> dt.tzinfo:
    """'+08:00' (fixed offset) or an IANA name such as 'Asia/Shanghai'."""
    match = re.fullmatch(r"(?:UTC)?([+-])(\d{2}):?(\d{2})", str(text).strip())
    if match:
        sign = 1 if match.group(1) == "+" else -1
        return dt.timezone(sign * dt.timedelta(hours=int(match.group(2)), minutes=int(match.group(3))))
    try:
        return ZoneInfo(str(text))
    except Exception as exc:  # ZoneInfoNotFoundError, ValueError
        raise ValueError(f"unknown timezone {text!r} (use +08:00 or an IANA name)") from exc
