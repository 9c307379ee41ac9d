"""Times: clock times and time zones of the settings (quiet hours, the shop's zone), and the times of
exports (sent_at, paid_at) as int64 epoch milliseconds, the one date rule of every path."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

MS_PER_DAY = 86_400_000
MS_PER_HOUR = 3_600_000
MISSING_TIME = np.iinfo(np.int64).min  # NaT's int64 value: an unknown time


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


_OFFSET_RE = r"(?:[zZ]|[+-]\d{2}:?\d{2})$"
# Dates as shops export them: 2024-09-02T05:00:00+08:00, 2024-09-02 05:00, 2024/9/2 5:00, 2024.9.2,
# 2024年9月2日 05:00 (all rebuilt as zero-padded ISO 8601), and epoch seconds (10 digits) or ms (13).
_DATE_FORM = (
    r"^(?P<y>\d{4})[-/.年](?P<m>\d{1,2})[-/.月](?P<d>\d{1,2})[日号]?"
    r"(?:[T\s]*(?P<H>\d{1,2})[:时点](?P<M>\d{1,2})(?:[:分](?P<S>\d{1,2}(?:\.\d{1,9})?)秒?)?)?"
    r"\s*(?P<z>[zZ]|[+-]\d{2}:?\d{2})?$"
)
_EPOCH_FORM = r"^\d{10}(?:\d{3})?$"
# The one date rule of every path (batch, service, training): outside [earliest, latest) a time is not a
# time (9999-12-31 overflowed the window arithmetic; 0001-01-01 wrote a year-1 send time). The range is
# the config's `flag.time_range` (NudgePolicy carries it); these are the bounds a range may take.
RANGE_LIMITS = ("1970-01-01", "2200-01-01")


def date_ms(text: str) -> int:
    """'2000-01-01' (a date, UTC) -> epoch ms; ValueError outside RANGE_LIMITS or not a date."""
    try:
        stamp = pd.Timestamp(str(text), tz="UTC")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"expected a date such as 2000-01-01, got {text!r}") from exc
    if not pd.Timestamp(RANGE_LIMITS[0], tz="UTC") <= stamp <= pd.Timestamp(RANGE_LIMITS[1], tz="UTC"):
        raise ValueError(f"{text!r} is outside {RANGE_LIMITS[0]}..{RANGE_LIMITS[1]}")
    return int(stamp.value // 1_000_000)


def _canonical_times(text: pd.Series) -> pd.Series:
    """Each value on its own as zero-padded ISO 8601 (so no value's reading depends on its neighbours),
    epoch values as '@<ms>', anything else (now, today, words) as ''."""
    parts = text.str.extract(_DATE_FORM)
    iso = (
        parts["y"] + "-" + parts["m"].str.zfill(2) + "-" + parts["d"].str.zfill(2)
        + ("T" + parts["H"].str.zfill(2) + ":" + parts["M"].str.zfill(2) + ":" + parts["S"].fillna("00").str.zfill(2)).fillna("T00:00:00")
        + parts["z"].fillna("")
    )
    epoch = text.where(text.str.fullmatch(_EPOCH_FORM))
    epoch_ms = "@" + epoch.where(epoch.str.len() == 13, epoch + "000")
    return iso.fillna(epoch_ms).fillna("")


def parse_times(values: Sequence[Any] | pd.Series, tz: dt.tzinfo, time_range: tuple[int, int]) -> np.ndarray:
    """Export times -> int64 epoch ms; values without an offset are read in `tz`. Unparseable values and
    times outside [earliest, latest) of `time_range` (epoch ms, `NudgePolicy.time_range`) -> MISSING_TIME
    (the caller rejects the row with a reason).
    Accepted forms: see `_DATE_FORM` and `_EPOCH_FORM`, and datetime columns of Parquet/Excel."""
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    series = series.reset_index(drop=True)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        result = series.dt.tz_convert(None).dt.as_unit("ms").to_numpy().view(np.int64).copy()
    elif pd.api.types.is_datetime64_dtype(series.dtype):
        local = series.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
        result = local.dt.tz_convert(None).dt.as_unit("ms").to_numpy().view(np.int64).copy()
    else:
        result = np.full(len(series), MISSING_TIME, dtype=np.int64)
        present = series.notna().to_numpy()
        if not present.any():
            return result
        text = _canonical_times(series[present].astype(str).str.strip())
        positions = np.flatnonzero(present)
        epoch = text.str.startswith("@").to_numpy()
        if epoch.any():
            result[positions[epoch]] = text[epoch].str[1:].astype(np.int64).to_numpy()
        aware = text.str.contains(_OFFSET_RE, regex=True).to_numpy() & ~epoch
        naive = (text != "").to_numpy() & ~aware & ~epoch
        if aware.any():
            parsed = pd.to_datetime(text[aware], format="ISO8601", utc=True, errors="coerce")
            result[positions[aware]] = parsed.dt.tz_convert(None).dt.as_unit("ms").to_numpy().view(np.int64)
        if naive.any():
            parsed = pd.to_datetime(text[naive], format="ISO8601", errors="coerce")
            years = [pd.Timestamp(ms, unit="ms").year for ms in time_range]
            parsed = parsed.where((parsed.dt.year >= years[0] - 1) & (parsed.dt.year <= years[1]))  # before localising: no overflow
            local = parsed.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
            result[positions[naive]] = local.dt.tz_convert(None).dt.as_unit("ms").to_numpy().view(np.int64)
    result[(result < time_range[0]) | (result >= time_range[1])] = MISSING_TIME
    return result


def format_times(times_ms: np.ndarray, tz: dt.tzinfo) -> list[str | None]:
    """int64 epoch ms -> '2024-05-03T08:00:00+08:00' (None for unknown)."""
    times_ms = np.asarray(times_ms, dtype=np.int64)
    out: list[str | None] = [None] * len(times_ms)
    known = np.flatnonzero(times_ms != MISSING_TIME)
    if len(known):
        local = pd.DatetimeIndex(pd.to_datetime(times_ms[known], unit="ms", utc=True)).tz_convert(tz)
        texts = local.strftime("%Y-%m-%dT%H:%M:%S%z")
        for i, text in zip(known, texts, strict=True):
            out[i] = f"{text[:-2]}:{text[-2:]}"
    return out
