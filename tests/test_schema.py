import json

import pyarrow as pa
import pytest

from cleanpairs.errors import InputError
from cleanpairs.schema import (
    P_CLEAN,
    ROW_NUMBER_KEY,
    STATUS,
    RunMetadata,
    output_fields,
    require_scores_schema,
    resolve_roles,
)


def test_default_names_are_found():
    schema = pa.schema([("uid", pa.int64()), ("url", pa.string()), ("TEXT", pa.string())])
    roles = resolve_roles(schema)
    assert (roles.key, roles.image, roles.caption) == ("uid", "url", "TEXT")


def test_row_number_is_the_key_when_no_key_column():
    roles = resolve_roles(pa.schema([("image", pa.string()), ("caption", pa.string())]))
    assert roles.key == ROW_NUMBER_KEY


def test_override_must_exist_and_message_lists_columns():
    schema = pa.schema([("image", pa.string()), ("caption", pa.string())])
    with pytest.raises(InputError, match="'alt' .* columns present: image, caption"):
        resolve_roles(schema, text_col="alt")


def test_missing_caption_column_lists_columns():
    with pytest.raises(InputError, match="no caption column .* columns present: image, note"):
        resolve_roles(pa.schema([("image", pa.string()), ("note", pa.string())]))


def test_wrong_type_is_named():
    schema = pa.schema([("image", pa.string()), ("caption", pa.int64())])
    with pytest.raises(InputError, match="'caption' .* must be string, but it holds int64"):
        resolve_roles(schema)


def test_metadata_round_trip():
    meta = RunMetadata(
        version="0",
        method="m",
        params={"a": 1},
        encoder="e",
        seed=3,
        input=["x"],
        input_fingerprint="f",
        roles={"key": "key"},
        rows=2,
        scored_rows=1,
        estimated_noise_rate=0.5,
    )
    schema = pa.schema([("a", pa.int8())]).with_metadata({b"cleanpairs": meta.to_json()})
    assert RunMetadata.from_schema(schema) == meta


def test_a_plain_table_is_not_a_scores_file():
    with pytest.raises(InputError, match="not a scores file"):
        RunMetadata.from_schema(pa.schema([("a", pa.int8())]))


def _schema_with(raw: bytes) -> pa.Schema:
    return pa.schema([("a", pa.int8())]).with_metadata({b"cleanpairs": raw})


def _valid() -> dict:
    return {
        "version": "0", "method": "m", "params": {}, "encoder": "e", "seed": 0, "input": ["x"],
        "input_fingerprint": "f", "roles": {"key": "key", "image": None}, "rows": 2, "scored_rows": 1,
        "estimated_noise_rate": None, "timings": {"total_s": 1.5}, "extra": {}, "from_a_later_version": 1,
    }  # fmt: skip


def _damaged(**fields: object) -> bytes:
    return json.dumps({**_valid(), **fields}).encode()


LACKS = (
    "lacks fields params, encoder, seed, input, input_fingerprint, roles, rows, scored_rows, "
    "estimated_noise_rate"
)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "its 'cleanpairs' metadata is not valid JSON"),
        (b"\xff\xfe", "its 'cleanpairs' metadata is not valid JSON"),
        (b"[1, 2]", "its 'cleanpairs' metadata is not a JSON object but list"),
        (b'{"method": "ncr", "version": "1"}', f"its 'cleanpairs' metadata {LACKS}"),
        (_damaged(rows="60"), "its 'cleanpairs' metadata has rows = \"60\", not an integer"),
        (_damaged(roles=["key"]), 'has roles = ["key"], not an object of column names'),
        (_damaged(estimated_noise_rate=True), "has estimated_noise_rate = true, not a number or null"),
    ],
)
def test_damaged_metadata_is_refused_in_one_line_naming_the_file(raw, message):
    with pytest.raises(InputError) as refused:
        RunMetadata.from_schema(_schema_with(raw), "s.parquet")
    text = str(refused.value)
    assert text.startswith("s.parquet is not a scores file: ") and message in text and "\n" not in text


def test_metadata_with_optional_fields_left_out_and_unknown_ones_added_is_read():
    data = _valid()
    del data["timings"], data["extra"]
    meta = RunMetadata.from_schema(_schema_with(json.dumps(data).encode()))
    assert (meta.rows, meta.timings, meta.extra, meta.roles["image"]) == (2, {}, {}, None)


def test_embedding_columns_take_lists_of_numbers_only():
    ints = pa.schema([("image_emb", pa.list_(pa.int64())), ("text_emb", pa.list_(pa.float16(), 4))])
    roles = resolve_roles(ints)
    assert (roles.image_emb, roles.text_emb) == ("image_emb", "text_emb")
    strings = pa.schema([("image_emb", pa.list_(pa.string())), ("text_emb", pa.list_(pa.float32()))])
    with pytest.raises(
        InputError, match=r"'image_emb' \(image embedding\) must be a list of numbers, but it holds"
    ):
        resolve_roles(strings)


def test_a_scores_schema_needs_cp_columns_of_the_right_types():
    meta = RunMetadata.from_json(_damaged())
    columns = [pa.field(f.name, f.type) for f in output_fields(pa.string())]
    good = pa.schema(columns).with_metadata({b"cleanpairs": meta.to_json()})
    assert require_scores_schema(good, "s.parquet") == meta
    text_scores = good.set(0, pa.field(P_CLEAN, pa.string()))
    with pytest.raises(
        InputError, match=r"^s\.parquet is not a scores file: its column cp_p_clean holds string"
    ):
        require_scores_schema(text_scores, "s.parquet")
    with pytest.raises(
        InputError, match=r"^s\.parquet is not a scores file: it lacks the columns cp_status$"
    ):
        require_scores_schema(good.remove(good.get_field_index(STATUS)), "s.parquet")
