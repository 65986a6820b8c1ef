"""LoRA adapter versions in the registry, against a real `mlflow server` with S3 artifacts (moto): the
version holds the adapter only, its base is resolved by reference (a registered pro-base-<name>), it
loads with mlflow.pyfunc in a fresh process, promotes and generates like a full version; a wrong base
is refused naming both."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from platform_services import FAKE_KEYS, mlflow_env, mlflow_server, s3_endpoint, s3_env  # noqa: F401 (fixtures)
from pro_lib import packaging, promotion, registry, wic
from pro_lib.wic import sft
from pro_lib.errors import CheckpointError
from pro_lib.testing import build_plain_lm as plain_base

NAMES = ["helpful", "harmless"]


def _sft(**kw):
    return dict(epochs=1.0, batch_size=4, learning_rate=1e-2, max_length=64, save_steps=1000, **kw)

PROMPT = "can you help me ?"

FRESH = r"""
import json, sys
import mlflow, pandas as pd
m = mlflow.pyfunc.load_model(sys.argv[1])
pred = m.predict(pd.DataFrame({"prompt": [sys.argv[2]], "weights": [[0.7, 0.3]]}), params={"max_new_tokens": 4})
print("RESULT" + json.dumps({"response": pred["response"][0], "columns": list(pred.columns),
                             "base": m.metadata.metadata.get("adapter_base")}))
"""


def test_adapter_version_over_a_registered_base(mlflow_env, s3_endpoint, tmp_path, capsys):
    from pro_lib.cli import main

    base = plain_base(tmp_path / "base")
    pol = wic.WICPolicy.from_pretrained(base, objectives=NAMES)
    examples = [{"prompt": pol.condition([PROMPT], [0.7, 0.3])[0], "completion": "yes i can help you"}] * 8
    sft.sft_train(pol, examples, sft.SFTOptions(**_sft(lora_r=2)), tmp_path / "w")
    pol.save_pretrained(tmp_path / "adapter")
    expected = pol.generate([PROMPT], weights=[0.7, 0.3], max_new_tokens=4)[0]

    assert packaging.register_model(base, "pro-base-tiny") == "1"          # a base: no gate
    packaging.register_model(plain_base(tmp_path / "other", seed=1), "pro-base-other")
    with pytest.raises(CheckpointError) as err:  # the adapter was not trained on that base
        packaging.register_model(tmp_path / "adapter", "pro-policy-pro-wic", metrics={"hypervolume": 0.5},
                                 base="models:/pro-base-other@challenger")
    assert "models:/pro-base-other/1" in str(err.value) and str(base.resolve()) in str(err.value)
    v = packaging.register_model(tmp_path / "adapter", "pro-policy-pro-wic", metrics={"hypervolume": 0.5},
                                 base="models:/pro-base-tiny@challenger")
    info = registry.list_versions("pro-policy-pro-wic")[0]
    assert info["version"] == v
    assert info["tags"][registry.BASE_TAG] == "models:/pro-base-tiny/1"   # the alias pinned to its version
    assert info["tags"][registry.RANK_TAG] == "2"
    assert int(info["tags"][registry.SIZE_TAG]) < packaging.folder_bytes(base)
    # the version holds the adapter, not a copy of the base
    folder = registry.download_model(f"models:/pro-policy-pro-wic/{v}")
    assert not list(folder.rglob("model.safetensors")) and list(folder.rglob("adapter_model.safetensors"))
    assert promotion.promote("pro-policy-pro-wic").promoted               # gated promotion as for full versions
    capsys.readouterr()
    assert main(["registry", "list", "pro-policy-pro-wic"]) == 0
    assert "adapter r=2 over models:/pro-base-tiny/1" in capsys.readouterr().out
    assert main(["generate", PROMPT, "--policy", "models:/pro-policy-pro-wic@champion", "--weights", "0.7,0.3",
                 "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.strip() == expected

    # a fresh interpreter with only mlflow: the base comes from the registry by reference
    env = {**os.environ, **FAKE_KEYS, "MLFLOW_TRACKING_URI": mlflow_env, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
           "PRO_HOME": str(tmp_path / "fresh"), "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "-c", FRESH, "models:/pro-policy-pro-wic@champion", PROMPT], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert got["response"] == expected and got["base"] == "models:/pro-base-tiny/1"
    assert got["columns"] == ["response", "weight_helpful", "weight_harmless"]
