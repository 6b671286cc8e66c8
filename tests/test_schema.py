import pyarrow as pa
import pytest

from cleanpairs.errors import InputError
from cleanpairs.schema import ROW_NUMBER_KEY, RunMetadata, resolve_roles


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
