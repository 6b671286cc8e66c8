"""The data contract: which input columns play which role, the ``cp_*`` output columns,
and the run metadata stored in every scores file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from cleanpairs.errors import InputError

KEY_NAMES = ("key", "uid", "id")
IMAGE_NAMES = ("image", "image_path", "path", "url")
CAPTION_NAMES = ("caption", "text", "TEXT")
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


def _pick(
    names: list[str], override: str | None, defaults: tuple[str, ...], role: str
) -> str | None:
    if override is not None:
        if override not in names:
            raise InputError(
                f"column {override!r} given for the {role} role is not in the table; "
                f"columns present: {', '.join(names)}"
            )
        return override
    return next((n for n in defaults if n in names), None)


def resolve_roles(
    schema: pa.Schema,
    *,
    key_col: str | None = None,
    image_col: str | None = None,
    text_col: str | None = None,
    require_media: bool = True,
) -> ColumnRoles:
    """Find the column of each role in ``schema``, by override or by the default names.

    Parameters
    ----------
    schema
        The table's schema.
    key_col, image_col, text_col
        Column names given by the user; each must exist.
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
        image_emb=_pick(names, None, IMAGE_EMB_NAMES, "image embedding"),
        text_emb=_pick(names, None, TEXT_EMB_NAMES, "text embedding"),
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


def _is_float_list(t: pa.DataType) -> bool:
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        return False
    return pa.types.is_floating(t.value_type)


def check_types(schema: pa.Schema, roles: ColumnRoles) -> None:
    """Raise :class:`InputError` if a role's column has a type the contract does not allow."""
    checks = [
        (roles.key, "key", lambda t: _is_string(t) or pa.types.is_integer(t), "string or integer"),
        (roles.image, "image", lambda t: _is_string(t) or _is_binary(t), "string path or bytes"),
        (roles.caption, "caption", _is_string, "string"),
        (roles.image_id, "image id", lambda t: _is_string(t) or pa.types.is_integer(t),
         "string or integer"),
        (roles.image_emb, "image embedding", _is_float_list, "list of float"),
        (roles.text_emb, "text embedding", _is_float_list, "list of float"),
    ]
    for column, role, ok, wanted in checks:
        if column is None or column == ROW_NUMBER_KEY:
            continue
        dtype = schema.field(column).type
        if not ok(dtype):
            raise InputError(
                f"column {column!r} ({role}) must be {wanted}, but it holds {dtype}"
            )


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
    def from_schema(cls, schema: pa.Schema) -> RunMetadata:
        """Read the metadata from a scores file's schema.

        Raises
        ------
        InputError
            The schema carries no cleanpairs metadata, so it is not a scores file, or the
            metadata is damaged.
        """
        raw = (schema.metadata or {}).get(METADATA_KEY)
        if raw is None:
            raise InputError(
                "this file has no cleanpairs metadata: it is not a scores file "
                "(make one with `cleanpairs score`)"
            )
        # A damaged file can hold anything under the key; say so rather than fail in json.
        try:
            data = json.loads(raw)
            known = {f for f in cls.__dataclass_fields__}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, TypeError, AttributeError):
            raise InputError(
                "the cleanpairs metadata of this file is damaged: it is not the JSON a run writes"
            ) from None


def require_scores_schema(schema: pa.Schema) -> RunMetadata:
    """Check that ``schema`` is a scores file's and return its run metadata."""
    meta = RunMetadata.from_schema(schema)
    missing = [c for c in OUTPUT_COLUMNS if c not in schema.names]
    if missing:
        raise InputError(f"scores file lacks the columns {', '.join(missing)}")
    # filter, export and info compute on these columns; a file edited by hand could hold text.
    twice = [c for c in OUTPUT_COLUMNS if len(schema.get_all_field_indices(c)) > 1]
    if twice:
        raise InputError(f"scores file has the column {twice[0]!r} more than once")
    for name in (P_CLEAN, SOFT_LABEL, SIMILARITY, REMATCH_SCORE, STATUS):
        dtype = schema.field(name).type
        wanted = _is_string if name == STATUS else pa.types.is_floating
        if not wanted(dtype):
            kind = "string" if name == STATUS else "float"
            raise InputError(f"scores file column {name!r} must be {kind}, but it holds {dtype}")
    return meta
