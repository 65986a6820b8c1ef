"""Batch view logic: read a prompt file, tabulate inferred weights, filter, export (no Streamlit)."""

from __future__ import annotations

import csv
import io
import json
from typing import Sequence

import numpy as np
import pandas as pd

from ui.simplex import confidences

PROMPT_KEYS = ("prompt", "question", "instruction", "input", "text")


class PromptFileError(ValueError):
    """A prompt file the batch view cannot read (the message names the file and line)."""


def read_prompts(data: bytes | str, filename: str, *, column: str | None = None,
                 limit: int | None = None) -> list[str]:
    """Prompts from an uploaded file: ``.txt`` (one per line), ``.jsonl``/``.json``, ``.csv``.

    JSON records use the first of ``prompt``, ``question``, ``instruction``, ``input``, ``text``
    (or ``column``); HH-RLHF style ``chosen`` transcripts give their first human turn.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PromptFileError(f"{filename} is not UTF-8 text (byte {exc.start}); "
                                  "save it as UTF-8") from None
    else:
        text = data
    name = filename.lower()
    if name.endswith(".jsonl") or name.endswith(".ndjson"):
        records = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise PromptFileError(f"{filename}:{lineno}: not valid JSON ({exc.msg})") from None
        prompts = [_record_prompt(r, f"{filename}:{ln}", column) for ln, r in records]
    elif name.endswith(".json"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PromptFileError(f"{filename}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        if isinstance(obj, dict):
            obj = obj.get("prompts") or obj.get("data") or [obj]
        if not isinstance(obj, list):
            raise PromptFileError(f"{filename}: expected a list of prompts or records")
        prompts = [_record_prompt(r, f"{filename}[{i}]", column) for i, r in enumerate(obj)]
    elif name.endswith(".csv") or name.endswith(".tsv"):
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if name.endswith(".tsv") else ",")
        fields = reader.fieldnames or []
        col = column or next((k for k in PROMPT_KEYS if k in fields), None)
        if col is None or col not in fields:
            raise PromptFileError(f"{filename}: no prompt column; expected one of {list(PROMPT_KEYS)} "
                                  f"(columns are {fields})")
        prompts = []
        for lineno, row in enumerate(reader, start=2):
            value = (row.get(col) or "").strip()
            if not value:
                raise PromptFileError(f"{filename}:{lineno}: empty '{col}'")
            prompts.append(value)
    else:  # plain text: one prompt per non-empty line
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise PromptFileError(f"{filename} holds no prompts")
    return prompts[:limit] if limit else prompts


def _record_prompt(rec, where: str, column: str | None) -> str:
    if isinstance(rec, str):
        value = rec
    elif isinstance(rec, dict):
        keys = (column,) if column else PROMPT_KEYS
        value = next((rec[k] for k in keys if isinstance(rec.get(k), str) and rec[k].strip()), None)
        if value is None and isinstance(rec.get("chosen"), str) and "Human:" in rec["chosen"]:
            value = rec["chosen"].split("Human:", 1)[1].split("Assistant:", 1)[0]
        if value is None:
            raise PromptFileError(f"{where}: no prompt field; expected one of "
                                  f"{[column] if column else list(PROMPT_KEYS)} (keys are {sorted(rec)})")
    else:
        raise PromptFileError(f"{where}: expected a string or an object, got {type(rec).__name__}")
    value = value.strip()
    if not value:
        raise PromptFileError(f"{where}: empty prompt")
    return value


def weights_table(prompts: Sequence[str], weights: np.ndarray, names: Sequence[str]) -> pd.DataFrame:
    """One row per prompt: the prompt, a weight column per objective, dominant, confidence."""
    W = np.asarray(weights, dtype=np.float64)
    if W.shape != (len(prompts), len(names)):
        raise ValueError(f"weights of shape {W.shape} for {len(prompts)} prompts and {len(names)} objectives")
    df = pd.DataFrame(W, columns=list(names))
    df.insert(0, "prompt", list(prompts))
    df["dominant"] = [names[i] for i in W.argmax(axis=1)]
    df["confidence"] = confidences(W)
    return df


def filter_dominant(df: pd.DataFrame, objectives: Sequence[str]) -> pd.DataFrame:
    """Rows whose dominant objective is one of ``objectives`` (all rows when none is chosen)."""
    if not objectives:
        return df
    return df[df["dominant"].isin(list(objectives))].reset_index(drop=True)


def to_csv(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode("utf-8")
