import gzip
import json

import pandas as pd
import pytest

from pro_lib.data import (DataConfig, LoadReport, load_pairs, prepare_data, split_hh_transcript,
                          split_pairs)
from pro_lib.config import build_config
from pro_lib.errors import DataError


def _write_jsonl(path, rows, gz=False):
    text = "\n".join(json.dumps(r) for r in rows) + "\n"
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


HH = [
    {"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how to bake bread?\n\nAssistant: Mix flour, water, yeast.",
     "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how to bake bread?\n\nAssistant: No idea."},
    {"chosen": "\n\nHuman: same?\n\nAssistant: yes", "rejected": "\n\nHuman: same?\n\nAssistant: yes"},
    {"chosen": "\n\nHuman: empty reply ok?\n\nAssistant: Sure.", "rejected": "\n\nHuman: empty reply ok?\n\nAssistant:"},
]


def test_hh_transcripts_split_at_last_assistant_turn(tmp_path):
    path = _write_jsonl(tmp_path / "helpful-base_test.jsonl.gz", HH, gz=True)
    report = LoadReport()
    pairs = load_pairs(f"hh:{path}", report=report)
    assert len(pairs) == 2 and report.skipped_identical == 1 and report.read == 3
    p = pairs[0]
    assert p.prompt.endswith("how to bake bread?\n\nAssistant:")
    assert p.prompt.startswith("\n\nHuman: hi")
    assert p.chosen == "Mix flour, water, yeast." and p.rejected == "No idea."
    assert p.source == "helpful-base"
    assert pairs[1].rejected == ""  # an empty reply is a legitimate (bad) response
    # auto-detected without the hh: prefix too
    assert [x.prompt for x in load_pairs(path)] == [x.prompt for x in pairs]


def test_split_hh_transcript_needs_assistant_turn():
    with pytest.raises(DataError, match="Assistant"):
        split_hh_transcript("\n\nHuman: no reply", where="f.jsonl:3")


def test_ultrafeedback_strings_and_chat_lists(tmp_path):
    rows = [
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": "Name a colour", "chosen": [{"role": "user", "content": "Name a colour"},
                                               {"role": "assistant", "content": "Blue"}],
         "rejected": [{"role": "user", "content": "Name a colour"}, {"role": "assistant", "content": "Dog"}]},
    ]
    pairs = load_pairs(_write_jsonl(tmp_path / "uf.jsonl", rows))
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [("What is 2+2?", "4", "5"),
                                                                 ("Name a colour", "Blue", "Dog")]


def test_csv_and_parquet_with_named_columns(tmp_path):
    df = pd.DataFrame({"q": ["a?", "b?"], "good": ["yes", "sure"], "bad": ["no", "nah"], "obj": ["x", "y"]})
    df.to_csv(tmp_path / "p.csv", index=False)
    df.to_parquet(tmp_path / "p.parquet")
    for name in ("p.csv", "p.parquet"):
        pairs = load_pairs(tmp_path / name, prompt_column="q", chosen_column="good", rejected_column="bad",
                           source_column="obj")
        assert [(p.prompt, p.chosen, p.source) for p in pairs] == [("a?", "yes", "x"), ("b?", "sure", "y")]


def test_shared_ultrafeedback_sample(shared_data):
    pairs = load_pairs(shared_data / "ultrafeedback-binarized-sample" / "eval_clean.jsonl")
    assert len(pairs) > 150 and all(p.prompt and p.chosen for p in pairs)


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", oops}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        load_pairs(path)


def test_missing_column_is_named(tmp_path):
    path = _write_jsonl(tmp_path / "x.jsonl", [{"prompt": "a", "chosen": "b"}])
    with pytest.raises(DataError, match=r"x\.jsonl:1.*rejected"):
        load_pairs(path)
    path = _write_jsonl(tmp_path / "y.jsonl", [{"question": "a", "chosen": "b", "rejected": "c"}])
    with pytest.raises(DataError, match=r"y\.jsonl:1.*'prompt'.*--prompt-column"):
        load_pairs(path)


def test_empty_prompt_is_an_error(tmp_path):
    path = _write_jsonl(tmp_path / "e.jsonl", [{"prompt": "  ", "chosen": "b", "rejected": "c"}])
    with pytest.raises(DataError, match=r"e\.jsonl:1: empty prompt"):
        load_pairs(path)


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_pairs(tmp_path / "nope.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="unknown file type"):
        load_pairs(tmp_path / "x.txt")


def test_hub_names_go_through_datasets(monkeypatch):
    import datasets

    calls = {}

    def fake_load_dataset(name, split):
        calls["args"] = (name, split)
        return [{"prompt": "p", "chosen": "c", "rejected": "r"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    pairs = load_pairs("HuggingFaceH4/ultrafeedback_binarized:train_prefs")
    assert calls["args"] == ("HuggingFaceH4/ultrafeedback_binarized", "train_prefs")
    assert pairs[0].chosen == "c"


def test_split_is_deterministic_and_keeps_prompts_together(tmp_path):
    rows = [{"prompt": f"prompt {i % 40}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(200)]
    pairs = load_pairs(_write_jsonl(tmp_path / "s.jsonl", rows))
    tr1, ev1 = split_pairs(pairs, 0.2, seed=3)
    tr2, ev2 = split_pairs(list(reversed(pairs)), 0.2, seed=3)
    assert {p.chosen for p in ev1} == {p.chosen for p in ev2}
    assert not {p.prompt for p in tr1} & {p.prompt for p in ev1}
    assert 0 < len(ev1) < len(tr1)
    _, ev3 = split_pairs(pairs, 0.2, seed=4)
    assert {p.chosen for p in ev3} != {p.chosen for p in ev1}


def test_prepare_data_writes_splits_and_report(tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(50)]
    src = _write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = build_config(DataConfig, {"sources": [str(src)], "output_dir": str(tmp_path / "out"),
                                    "eval_fraction": 0.2})
    m = prepare_data(cfg)
    assert m["n_train"] + m["n_eval"] == 50
    assert (tmp_path / "out" / "train.jsonl").is_file() and (tmp_path / "out" / "eval.jsonl").is_file()
    assert len(load_pairs(tmp_path / "out" / "eval.jsonl")) == m["n_eval"]
