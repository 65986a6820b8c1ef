"""pro_lib.storage against a real S3-compatible server (moto on loopback)."""

from __future__ import annotations

import pytest

from pro_lib import storage
from pro_lib.errors import CheckpointError, ConfigError
from pro_lib.refs import localize


def test_upload_and_download_folder_roundtrip(s3_env, tmp_path):
    storage.ensure_bucket("pro-test")
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text('{"a": 1}')
    (src / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    uri = storage.upload(src, "s3://pro-test/models/m1")
    assert uri == "s3://pro-test/models/m1"

    local = storage.download(uri)
    assert (local / "config.json").read_text() == '{"a": 1}'
    assert (local / "sub" / "weights.bin").read_bytes() == b"\x00\x01" * 1000
    # the copy is cached under PRO_HOME and s3:// works wherever a path does
    assert localize(uri) == local


def test_single_file_and_default_bucket(s3_env, tmp_path, monkeypatch):
    monkeypatch.setenv("PRO_S3_BUCKET", "pro-default")
    storage.ensure_bucket()
    f = tmp_path / "train.jsonl"
    f.write_text('{"prompt": "p", "chosen": "c", "rejected": "r"}\n')
    uri = storage.upload(f, "datasets/")
    assert uri == "s3://pro-default/datasets/train.jsonl"
    out = storage.download(uri, tmp_path / "copy.jsonl")
    assert out.read_text() == f.read_text()


def test_refresh_picks_up_new_content(s3_env, tmp_path):
    storage.ensure_bucket("pro-test")
    f = tmp_path / "x.txt"
    f.write_text("one")
    uri = storage.upload(f, "s3://pro-test/x.txt")
    assert storage.download(uri).read_text() == "one"
    f.write_text("two")
    storage.upload(f, uri)
    assert storage.download(uri).read_text() == "one"  # cached
    assert storage.download(uri, refresh=True).read_text() == "two"


def test_missing_object_and_bad_uri_errors(s3_env):
    storage.ensure_bucket("pro-test")
    with pytest.raises(CheckpointError, match="nothing at s3://pro-test/absent"):
        storage.download("s3://pro-test/absent/model")
    with pytest.raises(CheckpointError, match="bucket does not exist"):
        storage.download("s3://no-such-bucket/k")
    with pytest.raises(ConfigError, match="not an S3 URI"):
        storage.parse_s3_uri("http://x/y")


def test_unreachable_endpoint_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setattr(storage, "client", lambda: _fast_client())
    with pytest.raises(ConfigError, match="MLFLOW_S3_ENDPOINT_URL"):
        storage.download("s3://b/k")


def _fast_client():
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
                        config=Config(retries={"max_attempts": 0}, connect_timeout=1))
