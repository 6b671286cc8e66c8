"""The data contract: which input columns play which role, the ``cp_*`` output columns,
and the run metadata stored in every scores file."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

import pyarrow as pa

from cleanpairs.errors import InputError

# Default column names of each role, matched case-insensitively, first match wins: ours, then
# the ecosystem's (img2dataset: key / jpg / caption / url; LAION: SAMPLE_ID / URL / TEXT;
# DataComp: uid / text; Hugging Face: an ``Image()`` column, struct<bytes, path>, named image).
# Image bytes come before URLs: img2dataset's parquet output holds both ``jpg`` and ``url``.
KEY_NAMES = ("key", "uid", "id", "sample_id")
IMAGE_NAMES = ("image", "image_path", "path", "jpg", "jpeg", "png", "webp", "url")
CAPTION_NAMES = ("caption", "text", "txt")
IMAGE_ID_NAMES = ("image_id",)
IMAGE_EMB_NAMES = ("image_emb",)
TEXT_EMB_NAMES = ("text_emb",)

ROW_NUMBER_KEY = "__row_number__"
"""Stands for the key role when the table has no key column: the row number is the key."""

METADATA_KEY = b"cleanpairs"

P_CLEAN = "cp_p_clean"
SOFT_LABEL = "cp_soft_label"
SIMILARITY = "cp_similarity"
REMATCH_KEY = "cp_rematch_key"
REMATCH_SCORE = "cp_rematch_score"
STATUS = "cp_status"
OUTPUT_COLUMNS = (P_CLEAN, SOFT_LABEL, SIMILARITY, REMATCH_KEY, REMATCH_SCORE, STATUS)

STATUS_OK = "ok"


@dataclass(frozen=True)
class ColumnRoles:
    """Which column of the table plays each role of the input contract.

    ``key`` is :data:`ROW_NUMBER_KEY` when the row number serves as key; the optional roles
    are ``None`` when the table has no such column.
    """

    key: str
    image: str | None
    caption: str | None
    image_id: str | None = None
    image_emb: str | None = None
    text_emb: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


def _find(names: list[str], wanted: str) -> str | None:
    """The column called ``wanted``: the exact name, else the one name that matches ignoring case."""
    if wanted in names:
        return wanted
    folded = [n for n in names if n.casefold() == wanted.casefold()]
    return folded[0] if len(folded) == 1 else None


def _pick(names: list[str], override: str | None, defaults: tuple[str, ...], role: str) -> str | None:
    if override is not None:
        found = _find(names, override)
        if found is None:
            raise InputError(
                f"column {override!r} given for the {role} role is not in the table; "
                f"columns present: {', '.join(names)}"
            )
        return found
    return next((found for n in defaults if (found := _find(names, n)) is not None), None)


def resolve_roles(
    schema: pa.Schema,
    *,
    key_col: str | None = None,
    image_col: str | None = None,
    text_col: str | None = None,
    image_emb_col: str | None = None,
    text_emb_col: str | None = None,
    require_media: bool = True,
) -> ColumnRoles:
    """Find the column of each role in ``schema``, by override or by the default names.

    Parameters
    ----------
    schema
        The table's schema.
    key_col, image_col, text_col, image_emb_col, text_emb_col
        Column names given by the user; each must exist (the case may differ where only one
        column matches). Default names are matched the same way (:data:`KEY_NAMES`, ...).
    require_media
        When true, an image column and a caption column must be found unless the table
        carries precomputed ``image_emb`` / ``text_emb`` columns in their place.

    Raises
    ------
    InputError
        A named column is missing, a required role has no column, or a column has the
        wrong type. The message lists the columns present.
    """
    names = list(schema.names)
    key = _pick(names, key_col, KEY_NAMES, "key") or ROW_NUMBER_KEY
    image = _pick(names, image_col, IMAGE_NAMES, "image")
    caption = _pick(names, text_col, CAPTION_NAMES, "caption")
    roles = ColumnRoles(
        key=key,
        image=image,
        caption=caption,
        image_id=_pick(names, None, IMAGE_ID_NAMES, "image id"),
        image_emb=_pick(names, image_emb_col, IMAGE_EMB_NAMES, "image embedding"),
        text_emb=_pick(names, text_emb_col, TEXT_EMB_NAMES, "text embedding"),
    )
    if require_media:
        if roles.image is None and roles.image_emb is None:
            raise InputError(
                "no image column found (looked for "
                f"{', '.join(IMAGE_NAMES)}; set one with --image-col); "
                f"columns present: {', '.join(names)}"
            )
        if roles.caption is None and roles.text_emb is None:
            raise InputError(
                "no caption column found (looked for "
                f"{', '.join(CAPTION_NAMES)}; set one with --text-col); "
                f"columns present: {', '.join(names)}"
            )
    check_types(schema, roles)
    return roles


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def is_image_struct(t: pa.DataType) -> bool:
    """A Hugging Face ``Image()`` column: a struct with ``bytes`` (binary) and/or ``path`` (string)."""
    if not pa.types.is_struct(t):
        return False
    kinds = {t.field(i).name: t.field(i).type for i in range(t.num_fields)}
    has_bytes = "bytes" in kinds and _is_binary(kinds["bytes"])
    has_path = "path" in kinds and _is_string(kinds["path"])
    return (has_bytes or has_path) and set(kinds) <= {"bytes", "path"}


def _is_number_list(t: pa.DataType) -> bool:
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        return False
    # Integers too: a JSON list of whole numbers reads as int64, and quantised embeddings exist.
    return pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)


def check_types(schema: pa.Schema, roles: ColumnRoles) -> None:
    """Raise :class:`InputError` if a role's column has a type the contract does not allow."""
    checks = [
        (roles.key, "key", lambda t: _is_string(t) or pa.types.is_integer(t), "string or integer"),
        (
            roles.image,
            "image",
            lambda t: _is_string(t) or _is_binary(t) or is_image_struct(t),
            "string path or bytes (or a struct<bytes, path> as Hugging Face writes)",
        ),
        (roles.caption, "caption", _is_string, "string"),
        (roles.image_id, "image id", lambda t: _is_string(t) or pa.types.is_integer(t), "string or integer"),
        (roles.image_emb, "image embedding", _is_number_list, "a list of numbers"),
        (roles.text_emb, "text embedding", _is_number_list, "a list of numbers"),
    ]
    for column, role, ok, wanted in checks:
        if column is None or column == ROW_NUMBER_KEY:
            continue
        dtype = schema.field(column).type
        if not ok(dtype):
            raise InputError(f"column {column!r} ({role}) must be {wanted}, but it holds {dtype}")


def output_fields(key_type: pa.DataType) -> list[pa.Field]:
    """The ``cp_*`` columns appended to every scores file, in order."""
    return [
        pa.field(P_CLEAN, pa.float32()),
        pa.field(SOFT_LABEL, pa.float32()),
        pa.field(SIMILARITY, pa.float32()),
        pa.field(REMATCH_KEY, key_type),
        pa.field(REMATCH_SCORE, pa.float32()),
        pa.field(STATUS, pa.string()),
    ]


@dataclass
class RunMetadata:
    """What a scores file records about the run that made it (JSON under key ``cleanpairs``)."""

    version: str
    method: str
    params: dict[str, Any]
    encoder: str
    seed: int
    input: list[str]
    input_fingerprint: str
    roles: dict[str, str | None]
    rows: int
    scored_rows: int
    estimated_noise_rate: float | None
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_schema(cls, schema: pa.Schema, source: object = "this file") -> RunMetadata:
        """Read the metadata from a scores file's schema; ``source`` names the file in errors.

        Raises
        ------
        InputError
            The schema carries no cleanpairs metadata, or metadata that is not valid JSON,
            lacks fields, or holds a field of the wrong type: it is not a scores file.
        """
        raw = (schema.metadata or {}).get(METADATA_KEY)
        if raw is None:
            raise InputError(
                f"{source} is not a scores file: it has no 'cleanpairs' metadata "
                "(make one with `cleanpairs score`)"
            )
        return cls.from_json(raw, source)

    @classmethod
    def from_json(cls, raw: bytes | str, source: object = "this file") -> RunMetadata:
        """Parse the JSON a scores file stores under ``cleanpairs``; unknown fields are ignored.

        Raises
        ------
        InputError
            ``raw`` is not a JSON object, lacks a field, or holds one of the wrong type.
        """
        problem = f"{source} is not a scores file: its 'cleanpairs' metadata"
        try:
            data = json.loads(raw)
        except ValueError:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8
            raise InputError(f"{problem} is not valid JSON") from None
        if not isinstance(data, dict):
            raise InputError(f"{problem} is not a JSON object but {type(data).__name__}")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise InputError(f"{problem} lacks fields {', '.join(missing)}")
        wrong = [name for name, kind in _FIELD_KINDS.items() if name in data and not kind(data[name])]
        if wrong:
            name = wrong[0]
            raise InputError(
                f"{problem} has {name} = {json.dumps(data[name])[:40]}, not {_FIELD_KIND_NAMES[name]}"
            )
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# What each field of RunMetadata must hold; the code reading a scores file relies on these.
_FIELD_KINDS: dict[str, Callable[[object], bool]] = {
    "version": lambda v: isinstance(v, str),
    "method": lambda v: isinstance(v, str),
    "params": lambda v: isinstance(v, dict),
    "encoder": lambda v: isinstance(v, str),
    "seed": _is_int,
    "input": lambda v: isinstance(v, list),
    "input_fingerprint": lambda v: isinstance(v, str),
    "roles": lambda v: isinstance(v, dict) and all(x is None or isinstance(x, str) for x in v.values()),
    "rows": _is_int,
    "scored_rows": _is_int,
    "estimated_noise_rate": lambda v: v is None or _is_number(v),
    "timings": lambda v: isinstance(v, dict) and all(_is_number(x) for x in v.values()),
    "extra": lambda v: isinstance(v, dict),
}
_FIELD_KIND_NAMES = {
    "params": "an object",
    "seed": "an integer",
    "input": "a list",
    "roles": "an object of column names",
    "rows": "an integer",
    "scored_rows": "an integer",
    "estimated_noise_rate": "a number or null",
    "timings": "an object of numbers",
    "extra": "an object",
}
_FIELD_KIND_NAMES.update({name: "a string" for name in _FIELD_KINDS if name not in _FIELD_KIND_NAMES})


def require_scores_schema(schema: pa.Schema, source: object = "this file") -> RunMetadata:
    """Check that ``schema`` is a scores file's and return its run metadata.

    Raises
    ------
    InputError
        The metadata is missing or damaged, or the ``cp_*`` columns are not all there.
    """
    meta = RunMetadata.from_schema(schema, source)
    missing = [c for c in OUTPUT_COLUMNS if c not in schema.names]
    if missing:
        raise InputError(f"{source} is not a scores file: it lacks the columns {', '.join(missing)}")
    twice = [c for c in OUTPUT_COLUMNS if schema.names.count(c) > 1]
    if twice:
        raise InputError(f"{source} is not a scores file: it has the column {twice[0]!r} more than once")
    for name in (P_CLEAN, SOFT_LABEL, SIMILARITY, REMATCH_SCORE, STATUS):
        dtype = schema.field(name).type
        wanted = _is_string if name == STATUS else pa.types.is_floating
        if not wanted(dtype):
            raise InputError(
                f"{source} is not a scores file: its column {name} holds {dtype}, "
                f"not {'strings' if name == STATUS else 'floats'}"
            )
    return meta
