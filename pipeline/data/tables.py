"""Reading and writing the tables users bring: CSV and tab-separated text (.tsv, .txt: UTF-8, UTF-8 with
BOM, GB18030/GBK, UTF-16 with its BOM), JSONL, Parquet, Excel.

Shop back-ends export in whatever encoding the operator's Excel used, and exports are messy: rows with
a wrong number of fields or lines that are not JSON are handed back as rejected rows with a reason,
never dropped silently. Everything is read in chunks so the batch jobs stay in bounded memory.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

SUPPORTED_SUFFIXES = (".csv", ".tsv", ".txt", ".jsonl", ".parquet", ".xlsx")
# Delimited text, comma or TAB (sniffed from the header line): .txt is Excel's "Save as Unicode Text"
# and many back-office exports (UTF-16 with its BOM, TAB-separated). Read only: outputs are .csv.
DELIMITED_FORMATS = ("csv", "tsv", "txt")
OUTPUT_SUFFIXES = (".csv", ".jsonl", ".parquet", ".xlsx")
BINARY_FORMATS = ("parquet", "xlsx")  # no text encoding to detect
# CSV outputs: UTF-8 with a BOM (Excel on Chinese Windows reads plain UTF-8 as GBK: mojibake), GB18030
# for old Excel and ERP imports that expect the ANSI code page, or UTF-8 without a BOM for other programs.
CSV_ENCODINGS = ("utf-8-sig", "gb18030", "utf-8")
DEFAULT_CSV_ENCODING = "utf-8-sig"
_SNIFF_BYTES = 1 << 20


class TableError(ValueError):
    """An input file that cannot be read at all (the message names the file and the problem)."""


@dataclass
class Rejected:
    """A row that could not be used, with where it was and why."""

    row: int | None
    reason: str
    raw: str


@dataclass
class Chunk:
    frame: pd.DataFrame
    rejected: list[Rejected] = field(default_factory=list)


# One rule for yes/no cells (`purchase_intent`, `expressed_purchase_intent`, `ordered`): exports write
# them as 1/0, true/false, yes/no, y/n, t/f or 是/否, in any case, with surrounding blanks.
YES = frozenset({"1", "1.0", "true", "yes", "y", "t", "是"})
NO = frozenset({"0", "0.0", "false", "no", "n", "f", "否"})


def parse_yes_no(value: object) -> int | None:
    """1, 0, or None for a blank or anything else (the caller decides whether blank is allowed)."""
    if value is None or isinstance(value, bool):
        return None if value is None else int(value)
    text = str(value).strip().lower()
    if text in YES:
        return 1
    if text in NO:
        return 0
    return None


def parse_yes_no_column(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(parsed 1/0 with -1 where not a yes/no value, blank mask): the vectorised `parse_yes_no`."""
    cells = values.astype(object).where(values.notna(), "").astype(str).str.strip().str.lower()
    parsed = np.where(cells.isin(YES), 1, np.where(cells.isin(NO), 0, -1)).astype(np.int8)
    return parsed, (cells == "").to_numpy()


def _header_key(name: object) -> str:
    """Headers compared without case, surrounding or inner blanks, or a BOM: `会话 ID` is `会话id`."""
    return "".join(str(name).replace("\ufeff", "").split()).lower()


@dataclass(frozen=True)
class ColumnNames:
    """Which header of a shop's export is which column the jobs read (`columns.aliases` in the config,
    `--columns HEADER=column` on the command line). A header matches a column's own name or one of its
    aliases ignoring case and blanks; headers that name no known column are kept as read."""

    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)  # column -> headers meaning it
    explicit: dict[str, str] = field(default_factory=dict)  # header -> column (--columns), wins over aliases

    @classmethod
    def from_settings(cls, aliases: dict[str, list[str]] | None = None, explicit: str | dict[str, str] | None = None) -> "ColumnNames":
        return cls({k: tuple(v) for k, v in (aliases or {}).items()}, parse_column_map(explicit) if isinstance(explicit, str) else dict(explicit or {}))

    def only(self, columns: tuple[str, ...] | list[str]) -> "ColumnNames":
        """The mapping for a job that reads `columns`: other headers stay as they are (predict keeps a
        `shop` column named `shop`)."""
        wanted = set(columns)
        return ColumnNames(
            {c: names for c, names in self.aliases.items() if c in wanted}, {h: c for h, c in self.explicit.items() if c in wanted}
        )

    def mapping(self, headers: list[str]) -> dict[str, str]:
        """header -> column for `headers`; TableError when two headers would become one column."""
        lookup = {_header_key(column): column for column in self.aliases}
        for column, names in self.aliases.items():
            for name in names:
                lookup.setdefault(_header_key(name), column)
        lookup.update({_header_key(header): column for header, column in self.explicit.items()})
        result, taken = {}, {}
        for header in headers:
            if header == "_line":
                result[header] = header
                continue
            column = lookup.get(_header_key(header), header)
            if column in taken:
                raise TableError(
                    f"headers {taken[column]!r} and {header!r} both mean column {column!r}; "
                    f"say which one with --columns {header}={column} (or rename the other)"
                )
            taken[column] = header
            result[header] = column
        return result

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        if len(frame.columns):
            frame = frame.rename(columns=self.mapping([str(c) for c in frame.columns]))
        return frame


PLAIN_COLUMNS = ColumnNames()


def parse_column_map(text: str | None) -> dict[str, str]:
    """`内容=text,发送时间=sent_at` -> {header: column}."""
    mapping = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        header, sep, column = part.partition("=")
        if not sep or not header.strip() or not column.strip():
            raise TableError(f"--columns expects HEADER=column pairs separated by commas, got {part.strip()!r}")
        mapping[header.strip()] = column.strip().lower()
    return mapping


# What a file named .csv or .jsonl turns out to be when it is not text (a compressed export, a renamed
# workbook): named in the error instead of a csv traceback or a "missing columns" list of garbage bytes.
_BINARY_MAGIC = (
    (b"\x1f\x8b", "gzip-compressed data: decompress it first"),
    (b"PK\x03\x04", "a zip archive (an .xlsx workbook or a zipped export): name a workbook .xlsx, unzip an archive"),
    (b"BZh", "bzip2-compressed data: decompress it first"),
    (b"\xfd7zXZ\x00", "xz-compressed data: decompress it first"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive: extract it first"),
    (b"PAR1", "a Parquet file: name it .parquet"),
    (b"%PDF", "a PDF document"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\xd0\xcf\x11\xe0", "an old Excel (.xls) or other OLE file: save it as .xlsx or CSV"),
)
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# Bytes text may hold; the rest (NUL and the other C0 controls, DEL) are ~13% of random data and next to
# none of an export, where a stray NUL in one row is that row's problem (quarantined), not the file's.
_TEXT_BYTES = bytes([9, 10, 13, *range(32, 127), *range(128, 256)])


def _is_utf16(head: bytes) -> bool:
    """UTF-16 with its byte-order mark, as Excel's and many Windows tools' "Unicode text" is written."""
    return head.startswith(_UTF16_BOMS)


def _refuse_binary(path: Path, head: bytes) -> None:
    """A text table (CSV, JSONL) must start as UTF-8, GB18030 or UTF-16 (with its BOM) text: refuse known
    binary formats and a first 4 KB of which more than 5% are control bytes, with a one-line reason."""
    if _is_utf16(head):  # every ASCII character has a NUL byte: decoding is the check
        try:
            head[: len(head) // 2 * 2].decode("utf-16")
        except UnicodeDecodeError as exc:
            raise TableError(f"{path}: starts as UTF-16 but does not decode as UTF-16 ({exc.reason})") from exc
        return
    for magic, what in _BINARY_MAGIC:
        if head.startswith(magic):
            raise TableError(f"{path}: not a text table: {what}")
    sample = head[:4096]
    if sample and len(sample.translate(None, _TEXT_BYTES)) > 0.05 * len(sample):
        raise TableError(f"{path}: not a text table: binary data (control bytes in its first 4 KB)")


def read_header(path: str | Path) -> list[str]:
    """A table's column names without reading its rows (JSONL: the keys of the first object)."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: file not found")
    fmt = table_format(path)
    if fmt not in BINARY_FORMATS:
        with open(path, "rb") as handle:
            _refuse_binary(path, handle.read(4096))
    if fmt == "parquet":
        try:
            return list(pq.ParquetFile(path).schema_arrow.names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise TableError(f"{path}: not a readable Parquet file: {exc}") from exc
    if fmt == "xlsx":
        rows = _xlsx_rows(path)
        try:
            return [_cell_text(v) for v in next(rows)]
        except StopIteration:
            return []
        finally:
            rows.close()
    with open(path, "rb") as handle:
        utf16 = _is_utf16(handle.read(2))
    if utf16:
        with open(path, encoding="utf-16") as text_handle:
            text = next((line for line in text_handle if line.strip()), "")
    else:
        with open(path, "rb") as handle:  # the first non-blank line only: later lines may be in another encoding
            first = next((line for line in handle if line.strip()), b"")
        text = _decode_line(first[len(codecs.BOM_UTF8):] if first.startswith(codecs.BOM_UTF8) else first)
    if fmt in DELIMITED_FORMATS:
        try:
            return [name.strip() for name in next(csv.reader([text], delimiter=sniff_delimiter(text)), [])]
        except csv.Error as exc:  # e.g. a lone carriage return inside the header line
            raise TableError(f"{path}: the header line is not CSV ({exc})") from exc
    try:
        record = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return []
    return list(record) if isinstance(record, dict) else []


def sniff_delimiter(header_line: str) -> str:
    """TAB when the header line has more tabs than commas (a TAB-separated export, whatever its name),
    else a comma: a comma CSV with a stray tab in one header name stays a comma CSV."""
    return "\t" if header_line.count("\t") > header_line.count(",") else ","


def _decode_line(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("gb18030", errors="replace")


def require_columns(path: str | Path, required: tuple[str, ...] | list[str], names: ColumnNames = PLAIN_COLUMNS) -> None:
    """Fail on a missing column from the header alone, before any model is loaded or row is read."""
    headers = read_header(path)
    if not headers:
        return  # an empty file: the job says so with its own message
    present = set(names.mapping(headers).values())
    missing = [column for column in required if column not in present]
    if missing:
        raise TableError(
            f"{path}: missing column(s) {missing}; found {headers}. Map a header with --columns HEADER=column "
            "(e.g. --columns 内容=text) or add it under columns.aliases in the config"
        )


def table_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise TableError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    return suffix[1:]


def output_format(path: str | Path) -> str:
    """The format an output is written in, by extension; .tsv and .txt are read but not written."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        read_only = " (.tsv and .txt are read, not written)" if suffix in SUPPORTED_SUFFIXES else ""
        raise TableError(f"{path}: unsupported output file type {suffix!r}{read_only}; use one of {', '.join(OUTPUT_SUFFIXES)}")
    return suffix[1:]


def check_csv_encoding(encoding: str) -> str:
    """`encoding` when CSV outputs can be written in it; a TableError naming the choices otherwise."""
    if encoding not in CSV_ENCODINGS:
        raise TableError(f"unknown CSV encoding {encoding!r}; use one of {', '.join(CSV_ENCODINGS)}")
    return encoding


def detect_encoding(path: str | Path) -> str:
    """utf-16 for a file that starts with a UTF-16 byte-order mark; utf-8 (a BOM is skipped) when the start of
    the file decodes as UTF-8, else GB18030 (a superset of GBK)."""
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    _refuse_binary(Path(path), head)
    if _is_utf16(head):
        return "utf-16"
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8"
    # A multi-byte character may be cut at the end of the sample: only judge complete lines.
    if len(head) == _SNIFF_BYTES and b"\n" in head:
        head = head[: head.rindex(b"\n")]
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        head.decode("gb18030")
        return "gb18030"
    except UnicodeDecodeError as exc:
        raise TableError(f"{path}: neither UTF-8 nor GB18030 ({exc})") from exc


def whole_file_encoding(path: str | Path) -> str | None:
    """utf-8 or gb18030 (utf-16 for a file with its BOM) when every byte of the file decodes in it; None for
    a file with bad lines."""
    with open(path, "rb") as handle:
        utf16 = _is_utf16(handle.read(2))
    for encoding in ("utf-16",) if utf16 else ("utf-8", "gb18030"):
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(8 << 20), b""):
                    decoder.decode(block)
            decoder.decode(b"", final=True)
            return encoding
        except UnicodeDecodeError:
            continue
    return None


def _reads_in_one_encoding(path: Path) -> bool:
    """True when the encoding sniffed from the start of the file decodes all of it."""
    whole = whole_file_encoding(path)
    if whole is None:
        return False
    try:
        return detect_encoding(path) == whole
    except TableError:
        return False


def utf8_copy(path: str | Path, target: str | Path) -> list[Rejected]:
    """Copy a text export to UTF-8 line by line, each line in the encoding it decodes in (exports pasted
    together from UTF-8 and GBK tools exist); lines that decode in neither are returned as rejected."""
    rejected: list[Rejected] = []
    with open(path, "rb") as source, atomic_file(target) as out:
        for line_no, line in enumerate(source, start=1):
            if line_no == 1 and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8) :]
            for encoding in ("utf-8", "gb18030"):
                try:
                    out.write(line.decode(encoding).encode("utf-8"))
                    break
                except UnicodeDecodeError:
                    continue
            else:
                if line_no == 1:
                    raise TableError(f"{path}: the header line is neither UTF-8 nor GB18030")
                rejected.append(
                    Rejected(line_no, "bad encoding: neither UTF-8 nor GB18030", line.decode("utf-8", errors="replace").rstrip("\r\n"))
                )
    return rejected


def text_delimiter(path: Path, encoding: str) -> str:
    """The delimiter of a delimited text file, from its first line (comma for an empty file)."""
    with open(path, encoding="utf-8-sig" if encoding == "utf-8" else encoding, newline="") as handle:
        return sniff_delimiter(handle.readline())


def _csv_header(path: Path, encoding: str, delimiter: str = ",") -> list[str]:
    with open(path, encoding="utf-8-sig" if encoding == "utf-8" else encoding, newline="") as handle:
        try:
            header = next(csv.reader(handle, delimiter=delimiter))
        except StopIteration as exc:
            raise TableError(f"{path}: the file is empty (no header row)") from exc
    header = [name.strip() for name in header]
    if len(set(header)) != len(header):
        raise TableError(f"{path}: duplicate column names in the header {header}")
    return header


def _iter_csv(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    """Delimited text (.csv, .tsv, .txt) with its comma or TAB delimiter, one parser and one numbering
    of rejected rows for all of them."""
    encoding = detect_encoding(path)
    delimiter = text_delimiter(path, encoding)
    header = _csv_header(path, encoding, delimiter)
    pending: list[Rejected] = []

    def on_invalid(row: pa_csv.InvalidRow) -> str:
        pending.append(
            Rejected(  # pyarrow counts the header row: the record number, as every other row of a CSV is numbered
                row=None if row.number is None or row.number < 0 else row.number - 1,
                reason=f"expected {row.expected_columns} fields, found {row.actual_columns}",
                raw=row.text,
            )
        )
        return "skip"

    reader = pa_csv.open_csv(
        path,
        read_options=pa_csv.ReadOptions(
            encoding=encoding, column_names=header, skip_rows=1, block_size=8 << 20, use_threads=False
        ),
        parse_options=pa_csv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid, newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in header}, strings_can_be_null=False
        ),
    )
    buffered: list[pa.RecordBatch] = []
    buffered_rows = 0
    skipped: list[int] = []  # record numbers of the invalid rows met so far (the parser may have read ahead)
    next_record = 1

    def numbered(frame: pd.DataFrame) -> pd.DataFrame:
        """`_line`: each row's record number in the file, counting the invalid rows the parser skipped (the
        position in the frame alone would number every row after a skipped one wrongly)."""
        nonlocal next_record
        skipped.extend(r.row for r in pending if isinstance(r.row, int))
        ahead = np.array([n for n in skipped if n >= next_record], dtype=np.int64)
        candidates = np.arange(next_record, next_record + len(frame) + len(ahead), dtype=np.int64)
        numbers = np.setdiff1d(candidates, ahead, assume_unique=True)[: len(frame)]
        if len(numbers):
            next_record = int(numbers[-1]) + 1
        skipped[:] = [n for n in skipped if n >= next_record]
        return frame.assign(_line=numbers)

    try:
        for batch in reader:
            buffered.append(batch)
            buffered_rows += batch.num_rows
            if buffered_rows >= chunk_rows:
                yield Chunk(numbered(pa.Table.from_batches(buffered).to_pandas()), pending[:])
                pending.clear()
                buffered, buffered_rows = [], 0
    except pa.ArrowInvalid as exc:
        raise TableError(f"{path}: cannot parse as CSV: {exc}") from exc
    if buffered or pending:
        frame = (
            pa.Table.from_batches(buffered).to_pandas()
            if buffered
            else pd.DataFrame({name: pd.Series(dtype=str) for name in header})
        )
        yield Chunk(numbered(frame), pending[:])


def _iter_jsonl(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    encoding = detect_encoding(path)
    records: list[dict] = []
    rejected: list[Rejected] = []
    with open(path, encoding="utf-8-sig" if encoding == "utf-8" else encoding) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:  # without its newline, as Spark's text reader hands a line over: a cut-short line is an
                record = json.loads(line.rstrip("\n"))  # "Unterminated string", not an "Invalid control character"
            except json.JSONDecodeError as exc:
                rejected.append(Rejected(line_no, f"not valid JSON: {exc.msg}", line.rstrip("\n")))
                continue
            except RecursionError:  # json's decoder recurses per level: a hostile line is rejected, not the run
                rejected.append(Rejected(line_no, "not valid JSON: nested too deeply", line.rstrip("\n")[:1000]))
                continue
            if not isinstance(record, dict):
                rejected.append(Rejected(line_no, "a line must be a JSON object", line.rstrip("\n")))
                continue
            record["_line"] = line_no
            records.append(record)
            if len(records) >= chunk_rows:
                yield Chunk(pd.DataFrame.from_records(records), rejected)
                records, rejected = [], []
    if records or rejected:
        yield Chunk(pd.DataFrame.from_records(records), rejected)


def _cell_text(value: object) -> str | None:
    """An Excel cell as the text a CSV export would hold: whole numbers without `.0` (order numbers
    typed as numbers), dates in ISO 8601, empty cells None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ") if hasattr(value, "hour") else value.isoformat()
    return str(value)


def _xlsx_rows(path: Path) -> Iterator[tuple]:
    from openpyxl import load_workbook  # only needed for Excel files
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        raise TableError(f"{path}: not a readable Excel (.xlsx) file: {exc}") from exc
    try:
        yield from book.worksheets[0].iter_rows(values_only=True)
    finally:
        book.close()


def _iter_xlsx(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    """The first sheet; the first row is the header, values are read as text (as from a CSV export)."""
    rows = _xlsx_rows(path)
    try:
        header = next(rows)
    except StopIteration as exc:
        raise TableError(f"{path}: the sheet is empty (no header row)") from exc
    names = [(_cell_text(v) or "").strip() for v in header]
    while names and not names[-1]:
        names.pop()
    if len(set(names)) != len(names) or "" in names:
        raise TableError(f"{path}: the header row needs distinct, non-empty column names, got {names}")
    records, rejected = [], []
    for number, row in enumerate(rows, start=2):
        values = [_cell_text(v) for v in row]
        if all(v is None or not v.strip() for v in values):
            continue
        extra = [v for v in values[len(names):] if v is not None and v.strip()]
        if extra:
            rejected.append(Rejected(number, f"{len(names) + len(extra)} cells for {len(names)} columns", ",".join(v or "" for v in values)))
            continue
        record = dict(zip(names, values[: len(names)] + [None] * (len(names) - len(values)), strict=True))
        record["_line"] = number
        records.append(record)
        if len(records) >= chunk_rows:
            yield Chunk(pd.DataFrame.from_records(records, columns=[*names, "_line"]).astype(object), rejected)
            records, rejected = [], []
    if records or rejected:
        yield Chunk(pd.DataFrame.from_records(records, columns=[*names, "_line"]).astype(object), rejected)


def _iter_parquet(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise TableError(f"{path}: not a readable Parquet file: {exc}") from exc
    for batch in parquet.iter_batches(batch_size=chunk_rows):
        yield Chunk(batch.to_pandas())


def iter_table(path: str | Path, chunk_rows: int = 100_000, names: ColumnNames = PLAIN_COLUMNS) -> Iterator[Chunk]:
    """Chunks of a CSV/JSONL/Parquet file (format by extension), headers mapped to the jobs' column names
    (`names`; lower-cased otherwise); CSV values are kept as strings."""
    for chunk in _iter_raw(Path(path), chunk_rows):
        chunk.frame = names.apply(chunk.frame)
        yield chunk


def _iter_raw(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    if not path.is_file():
        raise TableError(f"{path}: file not found")
    fmt = table_format(path)
    readers = {**dict.fromkeys(DELIMITED_FORMATS, _iter_csv), "jsonl": _iter_jsonl, "parquet": _iter_parquet, "xlsx": _iter_xlsx}
    if fmt in BINARY_FORMATS or _reads_in_one_encoding(path):
        yield from readers[fmt](path, chunk_rows)
        return
    with tempfile.TemporaryDirectory(prefix="buyer-intent-decoded-") as tmp:
        copy = Path(tmp) / f"decoded{path.suffix}"
        bad_lines = utf8_copy(path, copy)
        first = True
        for chunk in readers[fmt](copy, chunk_rows):
            if first:
                chunk.rejected = bad_lines + chunk.rejected
                first = False
            yield chunk
        if first and bad_lines:
            yield Chunk(pd.DataFrame(), bad_lines)


def read_table(path: str | Path, names: ColumnNames = PLAIN_COLUMNS) -> tuple[pd.DataFrame, list[Rejected]]:
    """The whole table and its rejected rows; for inputs that fit in memory (training and evaluation sets)."""
    frames: list[pd.DataFrame] = []
    rejected: list[Rejected] = []
    for chunk in iter_table(path, names=names):
        frames.append(chunk.frame)
        rejected.extend(chunk.rejected)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return frame, rejected


# Characters a worksheet cannot hold (openpyxl refuses the whole file): shown as U+FFFD instead.
_EXCEL_ILLEGAL = {c: "\ufffd" for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)]}


def _text_columns(frame: pd.DataFrame) -> list:
    return [c for c in frame.columns if frame[c].dtype == object or pd.api.types.is_string_dtype(frame[c].dtype)]


def write_xlsx(frame: pd.DataFrame, handle: io.BufferedWriter) -> None:
    """Buyer text stays text: a message starting with `=` is written as a string, never as a formula
    Excel would run when the queue or nudge list is opened (formula injection)."""
    frame = frame.copy()
    for column in _text_columns(frame):
        frame[column] = frame[column].map(lambda v: v.translate(_EXCEL_ILLEGAL) if isinstance(v, str) else v)
    with pd.ExcelWriter(handle, engine="openpyxl") as writer:
        frame.to_excel(writer, index=False)
        for row in writer.sheets["Sheet1"].iter_rows():
            for cell in row:
                if cell.data_type == "f":  # the frame holds no formulas: this is text that looks like one
                    cell.data_type = "s"


# A CSV cell starting with one of these is run as a formula when the file is opened in Excel or
# LibreOffice (=HYPERLINK(...), +cmd|..., @SUM(...)); OWASP's defence: a leading apostrophe, which
# Excel shows as nothing and drops when the sheet is saved again.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _defuse_cell(value: object) -> object:
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


def _continuation_encoding(encoding: str) -> str:
    """The encoding of chunks after the first: the same, without a second BOM in the middle of the file."""
    return "utf-8" if encoding == "utf-8-sig" else encoding


def csv_bytes(frame: pd.DataFrame, header: bool = True, encoding: str = DEFAULT_CSV_ENCODING) -> bytes:
    """A frame as the CSV every job writes: text cells that Excel would run as a formula get a leading
    apostrophe (only text columns: a negative number stays a number), in `encoding` (CSV_ENCODINGS; by
    default UTF-8 with a BOM: Excel on Chinese Windows reads plain UTF-8 as GBK, mojibake). Chunks
    written after the first pass header=False and get neither header nor BOM."""
    columns = [c for c in _text_columns(frame) if frame[c].map(lambda v: isinstance(v, str) and v.startswith(_FORMULA_STARTS)).any()]
    if columns:
        frame = frame.copy()
        for column in columns:
            frame[column] = frame[column].map(_defuse_cell)
    check_csv_encoding(encoding)
    return frame.to_csv(index=False, header=header).encode(encoding if header else _continuation_encoding(encoding))


def _write(frame: pd.DataFrame, handle: io.BufferedWriter, fmt: str, csv_encoding: str) -> None:
    if fmt == "csv":
        handle.write(csv_bytes(frame, encoding=csv_encoding))
    elif fmt == "jsonl":
        handle.write(frame.to_json(orient="records", lines=True, force_ascii=False).encode("utf-8"))
    elif fmt == "xlsx":
        write_xlsx(frame, handle)
    else:
        frame.to_parquet(handle, index=False)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_file(path: str | Path) -> Iterator[io.BufferedWriter]:
    """A binary handle on a temporary file beside `path`, renamed over it only when the block succeeds:
    readers never see half a file. The file gets the usual permissions, not mkstemp's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, _default_mode())
        os.replace(tmp_name, path)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        raise named_os_error(exc, path) from exc
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def named_os_error(exc: OSError, path: str | Path) -> OSError:
    """A failed write (a full disk) names no file, pyarrow's neither: the same error naming `path`."""
    if exc.filename is not None or not exc.errno:
        return exc
    return type(exc)(exc.errno, os.strerror(exc.errno), str(path))


def write_table_atomic(frame: pd.DataFrame, path: str | Path, csv_encoding: str = DEFAULT_CSV_ENCODING) -> Path:
    """Write by extension (CSV in `csv_encoding`, UTF-8 with BOM by default; JSONL in UTF-8; Parquet; Excel
    .xlsx), atomically. The encoding is checked before the temporary file is made."""
    fmt = output_format(path)
    check_csv_encoding(csv_encoding)
    with atomic_file(path) as handle:
        _write(frame, handle, fmt, csv_encoding)
    return Path(path)


def write_bytes_atomic(data: bytes | str, path: str | Path) -> Path:
    with atomic_file(path) as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def write_text_atomic(text: str, path: str | Path) -> Path:
    return write_bytes_atomic(text, path)


def rejected_frame(rejected: list[Rejected], source: str | Path) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": [str(source)] * len(rejected),
            "row": [r.row for r in rejected],
            "reason": [r.reason for r in rejected],
            "raw": [r.raw for r in rejected],
        }
    )
