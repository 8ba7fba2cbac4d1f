"""Per-clip metadata from a CSV: column names, values, and the join to clip files.

    table = read_csv(Path("meta.csv"), columns={"label": "Diagnosis"})
    index = MetaIndex(Path("meta.csv"), columns={"label": "Diagnosis"})
    row = index.find(Path("/data/clips/a.mp4").resolve(), "clips/a.mp4")

Other collections name their columns differently. A header is normalised (lower
case, runs of other characters to `_`: "Patient ID / Name" -> `patient_id_name`)
and then mapped to the fields we use: `path`, `label`, `patient_id`, `probe` and
the findings (`COLUMN_ALIASES`); `--column FIELD=HEADER` names any other header.
A field's own name wins over its aliases, else the first alias listed there.

Rows are joined to files by path (relative to the CSV), else by the longest
unambiguous tail of the path (a tail of one component is the file name), else
the same without the file extension and ignoring case (a CSV may list
`Cov-Atlas+(44)` for `Cov-Atlas+(44).gif`). A row that several files match
by tail or name is ambiguous and used for none of them. Labels that differ only
in case or spacing ("covid-19", " COVID-19 ") are one class, spelled as most
rows spell it.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from data_prep import decode
from lusjax.data.format import FINDINGS
from lusjax.errors import UserError

# Normalised header names accepted for each field, the field's own name first.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "path": (
        "path",
        "file",
        "filename",
        "file_name",
        "filepath",
        "file_path",
        "video",
        "video_path",
        "video_file",
        "video_name",
        "clip",
        "clip_path",
        "clip_name",
        "fname",
    ),
    "label": ("label", "class", "class_name", "diagnosis", "category", "label_name", "target"),
    "patient_id": (
        "patient_id",
        "patient",
        "patientid",
        "patient_id_name",
        "patient_name",
        "subject",
        "subject_id",
        "participant",
        "participant_id",
        "case_id",
    ),
    "probe": ("probe", "probe_type", "transducer", "transducer_type"),
    "b_lines": ("b_lines", "blines", "b_line"),
    "a_lines": ("a_lines", "alines", "a_line"),
    "effusion": ("effusion", "effusions", "pleural_effusion"),
    "consolidation": ("consolidation", "consolidations"),
    "pleural_irregular": (
        "pleural_irregular",
        "pleural_irregularity",
        "pleural_irregularities",
        "pleural_line_irregularities",
        "pleural_line_irregularity",
    ),
}
# Skip reason of a metadata row that no file under the input matches.
NO_FILE = "metadata row without a file"
# More rows without a file than this are summed up in one line (a CSV of a larger
# collection than the clips at hand can name hundreds).
LISTED_ROWS_WITHOUT_FILE = 3
META_COLUMNS = ("probe", "label", "patient_id") + FINDINGS
PROBES = {"convex": "convex", "curvilinear": "convex", "curved": "convex", "linear": "linear"}
_TRUE, _FALSE = {"1", "1.0", "true", "yes", "y"}, {"0", "0.0", "false", "no", "n"}
_UNKNOWN = {"", "-1", "na", "n/a", "n.a.", "nan", "nd", "?", "unknown"}
# File extensions a CSV may leave off its paths (matched by name without extension).
_CLIP_EXTS = decode.VIDEO_EXTS | decode.DICOM_EXTS | decode.IMAGE_EXTS


@dataclasses.dataclass
class Table:
    """A metadata CSV's rows (field -> stripped value, plus `_line`) and its header.

    `renamed`: field -> the CSV's own header for it, where the two differ.
    """

    rows: list[dict]
    header: list[str]
    renamed: dict[str, str]

    def describe(self) -> str:
        """'path <- Filename, label <- Diagnosis' for the renamed columns."""
        return ", ".join(f"{field} <- {name}" for field, name in self.renamed.items())


def normalise(name: str) -> str:
    """A header as compared with the aliases: 'Patient ID / Name' -> 'patient_id_name'."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


COLUMN_OPTION_HELP = (
    "read FIELD (path, label, patient_id, probe or a finding) from the CSV "
    "column HEADER, e.g. --column label=Diagnosis (repeatable)"
)


def parse_columns(specs: Sequence[str]) -> dict[str, str]:
    """`--column FIELD=HEADER` options as {field: header}; UserError when malformed."""
    out = {}
    for spec in specs:
        field, sep, header = spec.partition("=")
        field = normalise(field)
        field = next((f for f, a in COLUMN_ALIASES.items() if field in a), field)
        if not sep or not header.strip() or field not in COLUMN_ALIASES:
            raise UserError(
                f"--column {spec!r}: use FIELD=HEADER with FIELD one of "
                + ", ".join(COLUMN_ALIASES)
                + " (e.g. --column label=Diagnosis)."
            )
        out[field] = header.strip()
    return out


def read_csv(
    path: Path,
    *,
    meta_required: bool,
    columns: Mapping[str, str] | None = None,
) -> Table:
    """The rows of a metadata CSV or manifest with its columns mapped to our fields.

    Args:
      path: the CSV (comma, tab or semicolon separated, UTF-8).
      meta_required: also require one metadata column (label, probe, ...).
      columns: field -> the CSV's header for it, overriding the aliases.

    Raises:
      UserError: unreadable file, bad encoding, no path column, ragged or empty rows.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            sample = f.read(4096)
            f.seek(0)
            first = sample.split("\n", 1)[0]  # the header: its commonest separator
            delimiter = max(",\t;", key=first.count)
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None) or []
            rows = list(reader)
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path} is not UTF-8 text (byte {e.start}); save it as UTF-8 CSV."
        ) from None
    except (OSError, csv.Error) as e:
        raise UserError(f"Cannot read {path}: {e}") from None
    cols, renamed = _map_header(path, header, columns or {})
    if "path" not in cols or (meta_required and not set(cols) & set(META_COLUMNS)):
        raise UserError(
            f"{path} has columns [{', '.join(header)}]; expected a file column (path, "
            "filename, file, video, ...) plus "
            + ("any of " + ", ".join(META_COLUMNS) if meta_required else "optional metadata")
            + " (or name them: --column path=HEADER, --column label=HEADER)."
        )
    out = []
    for line, values in enumerate(rows, 2):
        if not any(v.strip() for v in values):
            continue
        if len(values) > len(cols):
            raise UserError(f"{path} line {line} has {len(values)} fields, the header {len(cols)}.")
        row = {c: v.strip() for c, v in zip(cols, values) if c}
        row["_line"] = line
        if not row.get("path"):
            raise UserError(f"{path} line {line} has an empty '{renamed.get('path', 'path')}'.")
        out.append(row)
    if not out:
        raise UserError(f"{path} has a header but no rows.")
    return Table(out, list(header), renamed)


def _map_header(
    path: Path, header: list[str], columns: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """Each header cell's field name ('' for an unused duplicate) and the renames made."""
    norm = [normalise(h) for h in header]
    cols = list(norm)
    chosen: dict[str, int] = {}
    for field, name in columns.items():
        if normalise(name) not in norm:
            raise UserError(
                f"--column {field}={name}: {path} has no column {name!r} "
                f"(columns: {', '.join(header)})."
            )
        chosen[field] = norm.index(normalise(name))
    for field, aliases in COLUMN_ALIASES.items():
        if field in chosen:
            continue
        hits = [norm.index(a) for a in aliases if a in norm]
        if hits:
            chosen[field] = hits[0]
    taken = set(chosen.values())
    for i, c in enumerate(cols):  # a field's name on a column not chosen for it: unused
        if i not in taken and (c in COLUMN_ALIASES or c in chosen):
            cols[i] = ""
    renamed = {}
    for field, i in chosen.items():
        cols[i] = field
        if norm[i] != field:
            renamed[field] = header[i].strip()
    return cols, renamed


def row_meta(row: dict) -> dict:
    """Clip fields from a metadata row (findings validated in `MetaIndex`)."""
    return {
        "probe": PROBES.get(row.get("probe", "").lower(), "unknown"),
        "label_name": row.get("label", ""),
        "patient_id": row.get("patient_id", ""),
        "findings": {k: finding(row, k) for k in FINDINGS},
    }


def finding(row: dict, name: str) -> int:
    """-1 (unknown), 0 or 1; ValueError for anything else."""
    v = row.get(name, "").strip().lower()
    if v in _UNKNOWN:
        return -1
    if v in _TRUE:
        return 1
    if v in _FALSE:
        return 0
    raise ValueError(v)


class MetaIndex:
    """Metadata rows, found by path (see the module doc for the order of matching)."""

    def __init__(self, csv_path: str | os.PathLike, columns: Mapping[str, str] | None = None):
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise UserError(f"Metadata CSV {csv_path} does not exist.")
        self.table = read_csv(csv_path, meta_required=True, columns=columns)
        self.rows = self.table.rows
        self.by_abs, self.by_tail, self.by_stem = {}, {}, {}
        self.notes: list[str] = []
        if self.table.renamed:
            self.notes.append(f"metadata columns of {csv_path.name}: {self.table.describe()}")
        for row in self.rows:
            for k in FINDINGS:
                try:
                    finding(row, k)
                except ValueError:
                    raise UserError(
                        f"{csv_path} line {row['_line']}: {k}={row[k]!r}; use 0, 1 "
                        "or empty (unknown)."
                    ) from None
            rel = posixpath.normpath(row["path"].replace("\\", "/"))
            absolute = (csv_path.parent / rel).resolve()
            if absolute in self.by_abs:
                raise UserError(
                    f"{csv_path} lists {row['path']} twice (lines "
                    f"{self.by_abs[absolute]['_line']} and {row['_line']})."
                )
            self.by_abs[absolute] = row
            parts = rel.split("/")
            for k in range(1, len(parts) + 1):
                self.by_tail.setdefault("/".join(parts[-k:]), []).append(row)
                self.by_stem.setdefault(_stem_tail(parts[-k:]), []).append(row)
        self._merge_label_spellings()

    def find(self, path: Path, video_id: str) -> tuple[dict | None, bool]:
        """(row, exact): the row of the file at absolute `path`; exact when by full path."""
        row = self.by_abs.get(path)
        if row is not None:
            return row, True
        parts = video_id.split("/")
        if path.is_dir():  # a frame folder: no extension to leave off
            return self._by_tail(self.by_tail, parts, lambda p: "/".join(p)), False
        row = self._by_tail(self.by_tail, parts, lambda p: "/".join(p))
        return row or self._by_tail(self.by_stem, parts, _stem_tail), False

    def unused(self, used: set[int]) -> list[dict]:
        return [r for r in self.rows if id(r) not in used]

    @staticmethod
    def _by_tail(index: dict, parts: list[str], key) -> dict | None:
        for k in range(len(parts), 0, -1):
            rows = index.get(key(parts[-k:]), [])
            if len(rows) > 1:
                return None  # ambiguous; shorter tails only more so
            if rows:
                return rows[0]
        return None

    def _merge_label_spellings(self) -> None:
        """'covid-19', 'COVID-19 ' and 'Covid-19' become one label, its commonest spelling."""
        spellings: dict[str, collections.Counter] = {}
        for row in self.rows:
            if row.get("label"):
                row["label"] = " ".join(row["label"].split())
                spellings.setdefault(row["label"].casefold(), collections.Counter())[
                    row["label"]
                ] += 1
        canonical = {k: c.most_common(1)[0][0] for k, c in spellings.items()}
        for row in self.rows:
            if row.get("label"):
                row["label"] = canonical[row["label"].casefold()]
        merged = [
            f"{canonical[k]!r} ({', '.join(repr(s) for s in c if s != canonical[k])})"
            for k, c in spellings.items()
            if len(c) > 1
        ]
        if merged:
            self.notes.append(
                "labels that differ only in case or spacing are one class: " + "; ".join(merged)
            )


def _stem_tail(parts: Sequence[str]) -> str:
    """A path tail without a clip extension on its last part, ignoring case."""
    last = parts[-1]
    stem, ext = posixpath.splitext(last)
    if ext.lower() in _CLIP_EXTS:
        last = stem
    return "/".join([*parts[:-1], last]).casefold()


def split_rows_without_file(skips: Sequence, reason=lambda s: s.reason) -> tuple[list, list]:
    """(skips to list one by one, metadata rows without a file to sum up in one line):
    the rows join the list while there are at most `LISTED_ROWS_WITHOUT_FILE`.
    `reason(skip)` reads a skip's reason (a `Skip`'s attribute, or a dataset.json dict's
    key)."""
    rows = [s for s in skips if reason(s) == NO_FILE]
    if len(rows) <= LISTED_ROWS_WITHOUT_FILE:
        return list(skips), []
    return [s for s in skips if reason(s) != NO_FILE], rows
