"""Preference pairs: one schema, loaders for the formats PRO meets, deterministic splits.

Supported sources (``load_pairs(spec)``):

- ``demo``: the small preference set shipped with PRO (helpful / harmless / humor).
- HH-RLHF transcripts (``*.jsonl[.gz]`` with ``chosen``/``rejected`` full transcripts and no
  ``prompt`` column): split at the last ``\\n\\nAssistant:``. Prefix a path with ``hh:`` to force it.
- binarized UltraFeedback and any table with prompt / chosen / rejected columns (JSONL, JSON, CSV,
  Parquet); chosen / rejected may be strings or chat-message lists.
- a hub dataset name (``Anthropic/hh-rlhf``, ``HuggingFaceH4/ultrafeedback_binarized``...) through
  ``datasets.load_dataset``; ``name:split`` picks a split.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from pro_lib.artifacts import DATA_REPORT
from pro_lib.config import field
from pro_lib.errors import DataError
from pro_lib.io import write_json, write_jsonl
from pro_lib.refs import localize

log = logging.getLogger(__name__)

HH_ASSISTANT = "\n\nAssistant:"
T = TypeVar("T")


@dataclass
class PreferencePair:
    """One preference pair: ``chosen`` is preferred over ``rejected`` as a reply to ``prompt``."""

    prompt: str
    chosen: str
    rejected: str
    source: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class LoadReport:
    """What a load did: how many records were read, kept and skipped (and why)."""

    read: int = 0
    kept: int = 0
    skipped_identical: int = 0

    def __str__(self) -> str:
        return (f"read {self.read} records, kept {self.kept}, skipped {self.skipped_identical} "
                "whose chosen == rejected")


def demo_data_path() -> Path:
    """The demo preference set shipped inside the package."""
    return Path(str(resources.files("pro_lib") / "demo_data" / "preferences.jsonl"))


def split_hh_transcript(text: str, *, where: str = "") -> tuple[str, str]:
    """Split an HH-RLHF transcript into (prompt, response) at the last ``\\n\\nAssistant:``.

    The prompt keeps everything up to and including that marker; the response is what follows.
    """
    idx = text.rfind(HH_ASSISTANT)
    if idx < 0:
        raise DataError(f"{where}: transcript has no '\\n\\nAssistant:' turn; is this HH-RLHF data?")
    cut = idx + len(HH_ASSISTANT)
    return text[:cut], text[cut:].strip()


def _message_text(value: Any, *, role: str | None, where: str, column: str) -> str:
    """A string, or the last message (of ``role`` if given) of a chat-message list."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        msgs = [m for m in value if role is None or m.get("role") == role] or value
        content = msgs[-1].get("content")
        if isinstance(content, str):
            return content
    raise DataError(f"{where}: column '{column}' must be a string or a list of chat messages "
                    f"({{'role': ..., 'content': ...}}), got {type(value).__name__}")


# How to name other columns, for the commands that have no column flags (all but `pro data prepare`).
DEFAULT_COLUMN_HINT = ("This command reads the columns prompt, chosen and rejected: rename them in the file, or "
                       "convert it with `pro data prepare --sources <file> --prompt-column ... --chosen-column ... "
                       "--rejected-column ...` (pipelines: data_config keys prompt_column, chosen_column, "
                       "rejected_column) and use the train.jsonl it writes.")
PREPARE_COLUMN_HINT = ("Name the right columns with --prompt-column / --chosen-column / --rejected-column "
                       "(config keys prompt_column, chosen_column, rejected_column).")


def _record_to_pair(rec: dict, *, where: str, prompt_column: str, chosen_column: str,
                    rejected_column: str, source_column: str | None, source: str | None,
                    hh: bool | None, column_hint: str = DEFAULT_COLUMN_HINT) -> PreferencePair:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    missing = [c for c in (chosen_column, rejected_column) if c not in rec]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; found {sorted(rec)}. {column_hint}")
    is_hh = hh if hh is not None else (prompt_column not in rec and isinstance(rec[chosen_column], str)
                                       and HH_ASSISTANT in rec[chosen_column])
    if is_hh:
        prompt, chosen = split_hh_transcript(rec[chosen_column], where=where)
        prompt_r, rejected = split_hh_transcript(rec[rejected_column], where=where)
        if prompt_r != prompt:
            # HH pairs share the dialogue up to the last reply; keep the chosen side's prompt.
            log.debug("%s: chosen and rejected transcripts differ before the last reply", where)
    else:
        if prompt_column not in rec:
            raise DataError(f"{where}: missing column '{prompt_column}'; found {sorted(rec)}. {column_hint} "
                            "HH-RLHF transcripts (no prompt column): use hh:<file>.")
        prompt = _message_text(rec[prompt_column], role="user", where=where, column=prompt_column)
        chosen = _message_text(rec[chosen_column], role="assistant", where=where, column=chosen_column)
        rejected = _message_text(rec[rejected_column], role="assistant", where=where,
                                 column=rejected_column)
    # An empty *response* is a legitimate (bad) reply, as in HH-RLHF; an empty prompt is not.
    for name, value in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise DataError(f"{where}: {name} is missing (null/NaN); fix or drop the record")
    if not str(prompt).strip() or (is_hh and not str(prompt).removesuffix(HH_ASSISTANT).strip()):
        raise DataError(f"{where}: empty prompt; every pair needs a prompt (fix or drop the record)")
    # PRO's own files (prepare_data's train/eval.jsonl) carry a "source" field: keep it by default.
    src = rec.get(source_column or "source")
    src = src if isinstance(src, (str, int)) or source_column else None
    return PreferencePair(str(prompt), str(chosen), str(rejected),
                          str(src) if src is not None else source)


def _utf8_lines(path: Path, fh) -> Iterator[str]:
    """Decode a binary file's lines as UTF-8 (a leading byte-order mark is dropped), naming the line
    and byte of the first invalid sequence."""
    for lineno, raw in enumerate(fh, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                            f"{exc.start + 1}); re-save the file as UTF-8") from None
        yield line.removeprefix("\ufeff") if lineno == 1 else line


def _iter_file_records(path: Path) -> Iterator[tuple[str, dict]]:
    """Yield (where, record) with ``where`` = 'file:line' for each record of a local file."""
    name = path.name.lower()
    opener = gzip.open if name.endswith(".gz") else open
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        with opener(path, "rb") as fh:
            for lineno, line in enumerate(_utf8_lines(path, fh), start=1):
                if not line.strip():
                    continue
                try:
                    yield f"{path}:{lineno}", json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    elif name.endswith((".json", ".json.gz")):
        with opener(path, "rb") as fh:
            try:
                data = json.loads("".join(_utf8_lines(path, fh)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        if isinstance(data, dict):
            data = data.get("data", data.get("rows"))
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of records (or {{'data': [...]}})")
        for i, rec in enumerate(data):
            yield f"{path}: record {i}", rec
    elif name.endswith((".csv", ".tsv")):
        with open(path, "rb") as fh:
            reader = csv.DictReader(_utf8_lines(path, fh), delimiter="\t" if name.endswith(".tsv") else ",")
            for rec in reader:
                yield f"{path}:{reader.line_num}", rec
    elif name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DataError(f"{path}: cannot read Parquet: {exc}") from None
        for i, rec in enumerate(table.to_pylist()):
            yield f"{path}: row {i}", rec
    else:
        raise DataError(f"{path}: unknown file type; use .jsonl, .jsonl.gz, .json, .csv, .tsv or .parquet")


def _iter_hub_records(name: str, split: str) -> Iterator[tuple[str, dict]]:
    import datasets

    if ":" in name:
        name, split = name.split(":", 1)
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:
        raise DataError(f"cannot load hub dataset '{name}' (split '{split}'): {exc}. Offline? Pass a "
                        "local file instead (.jsonl/.csv/.parquet).") from None
    for i, rec in enumerate(ds):
        yield f"{name}[{split}] row {i}", rec


def load_pairs(spec: str | Path, *, prompt_column: str = "prompt", chosen_column: str = "chosen",
               rejected_column: str = "rejected", source_column: str | None = None,
               source: str | None = None, split: str = "train", limit: int | None = None,
               report: LoadReport | None = None, column_hint: str = DEFAULT_COLUMN_HINT) -> list[PreferencePair]:
    """Load preference pairs from a file, ``demo``, ``hh:<file>`` or a hub dataset name.

    Pairs whose chosen == rejected are skipped and counted (logged, and in ``report``).
    ``source`` labels every pair (e.g. the HH subset) unless ``source_column`` names a column (default: a
    ``source`` field when records have one, as the files ``prepare_data`` writes do).
    ``column_hint``: how the calling command names other columns (its flags / config keys).
    """
    report = report if report is not None else LoadReport()
    text = str(spec)
    hh: bool | None = None
    if text == "demo":
        path: Path | str = demo_data_path()
        source_column = source_column or "source"
    else:
        if text.startswith("hh:"):
            hh, text = True, text[3:]
        path = localize(text) if text.startswith(("s3://",)) else Path(text).expanduser()
    if isinstance(path, Path) and path.exists():
        if source is None and hh:
            source = path.name.split("_")[0].removesuffix(".jsonl.gz")
        records: Iterable[tuple[str, dict]] = _iter_file_records(path)
    elif isinstance(path, Path) and (path.suffix or "/" not in text or text.startswith((".", "/"))):
        raise DataError(f"data file {path} does not exist; pass an existing file, 'demo', or a hub "
                        "dataset name such as Anthropic/hh-rlhf")
    else:
        records = _iter_hub_records(text, split)

    pairs: list[PreferencePair] = []
    for where, rec in records:
        report.read += 1
        pair = _record_to_pair(rec, where=where, prompt_column=prompt_column,
                               chosen_column=chosen_column, rejected_column=rejected_column,
                               source_column=source_column, source=source, hh=hh, column_hint=column_hint)
        if pair.chosen.strip() == pair.rejected.strip():
            report.skipped_identical += 1
            continue
        pairs.append(pair)
        if limit is not None and len(pairs) >= limit:
            break
    report.kept = len(pairs)
    if not pairs:
        raise DataError(f"{spec}: no usable preference pairs ({report})")
    log.info("%s: %s", spec, report)
    return pairs


def split_pairs(pairs: list[PreferencePair], eval_fraction: float = 0.1,
                seed: int = 0) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Deterministic train/eval split by hashing each pair's content with ``seed``.

    Pairs with the same prompt land on the same side, so eval prompts are unseen in training.
    Stable under reordering of the input and independent of the platform.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise DataError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    threshold = int(eval_fraction * 2**32)
    train, evals = [], []
    for p in pairs:
        h = int(hashlib.sha256(f"{seed}\0{p.prompt}".encode()).hexdigest()[:8], 16)
        (evals if h < threshold else train).append(p)
    if not train or not evals:
        raise DataError(f"split of {len(pairs)} pairs with eval_fraction={eval_fraction} left one side "
                        "empty; use more data or another eval fraction")
    return train, evals


def stratified_order(sources: Sequence[str | None], seed: int = 0) -> list[int]:
    """A seeded random order of ``range(len(sources))`` in which every prefix holds each source in
    proportion, within one item (so every block of consecutive positions within two).

    Items are shuffled within their source (seeded); positions go to sources by largest deficit:
    position m takes the source whose count falls furthest below ``m * share`` (ties broken by a
    seeded random priority). The first m positions are then a stratified random sample of size m and
    positions [a, a + m) (one online round) are one too. Unlabelled items form one stratum. Which
    items are picked does not depend on the input's order across sources.
    """
    if not len(sources):
        return []
    rng = np.random.default_rng(seed)
    labels = ["" if s is None else str(s) for s in sources]
    strata = sorted(set(labels))
    queues = []
    for label in strata:
        idx = np.array([i for i, lab in enumerate(labels) if lab == label])
        queues.append(list(idx[rng.permutation(len(idx))]))
    share = np.array([len(q) for q in queues], dtype=np.float64) / len(labels)
    tie = rng.random(len(strata)) * 1e-9
    taken = np.zeros(len(strata))
    order: list[int] = []
    for m in range(1, len(labels) + 1):
        deficit = m * share - taken + tie
        deficit[[len(q) == taken[j] for j, q in enumerate(queues)]] = -np.inf
        j = int(np.argmax(deficit))
        order.append(int(queues[j][int(taken[j])]))
        taken[j] += 1
    return order


def stratified_sample(items: Sequence[T], n: int | None, *, sources: Sequence[str | None],
                      seed: int = 0) -> list[T]:
    """``n`` items drawn at random with a fixed seed, stratified by source (all items, in a seeded
    stratified order, when ``n`` is None or >= len(items)). The one helper for every subset of prompts
    PRO takes: evaluation prompts, RL prompts, online rounds, SFT subsets."""
    if len(items) != len(sources):
        raise DataError(f"stratified_sample: {len(items)} items but {len(sources)} source labels")
    order = stratified_order(sources, seed)
    if n is not None:
        order = order[:max(0, n)]
    return [items[i] for i in order]


def source_mix(sources: Iterable[str | None]) -> dict[str, int]:
    """Count per source (``unlabelled`` for None), sorted by name: the mix reported beside every result."""
    counts: dict[str, int] = {}
    for s in sources:
        key = s or "unlabelled"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def format_source_mix(mix: Mapping[str, int]) -> str:
    """``"helpful-base 8 (50%), harmless-base 8 (50%)"``."""
    total = sum(mix.values()) or 1
    return ", ".join(f"{k} {v} ({v / total:.0%})" for k, v in mix.items())


def load_prompt_pool(specs: Sequence[str]) -> tuple[list[str], list[str | None]]:
    """Unique prompts of ``specs`` (load_pairs specs) in first-seen order, with each prompt's source."""
    if not specs:
        raise DataError("no prompt data: give --data <file>")
    seen: dict[str, str | None] = {}
    for spec in specs:
        for p in load_pairs(spec):
            seen.setdefault(p.prompt, p.source)
    return list(seen), list(seen.values())


def write_pairs(pairs: Iterable[PreferencePair], path: str | Path) -> Path:
    return write_jsonl(path, (p.to_dict() for p in pairs))


@dataclass
class DataConfig:
    """Prepare data: load one or more sources, label them, split into train/eval JSONL files."""

    sources: list[str] = field(default_factory=lambda: ["demo"],
                               help="data sources: files, 'demo', 'hh:<file>' or hub names")
    output_dir: str = field("runs/data", help="folder for train.jsonl, eval.jsonl, data_report.json")
    eval_fraction: float = field(0.1, help="fraction of prompts held out for evaluation")
    seed: int = field(0, help="split seed")
    limit_per_source: int | None = field(None, help="keep at most this many pairs per source")
    prompt_column: str = field("prompt", help="prompt column of tabular sources")
    chosen_column: str = field("chosen", help="chosen-response column")
    rejected_column: str = field("rejected", help="rejected-response column")
    source_column: str | None = field(None, help="column naming each pair's source/subset")


def prepare_data(cfg: DataConfig) -> dict:
    """Load ``cfg.sources``, split deterministically and write ``train.jsonl`` / ``eval.jsonl``."""
    from pro_lib.io import check_output_dir

    out = check_output_dir(cfg.output_dir, what="data prepare")
    pairs: list[PreferencePair] = []
    per_source = {}
    for spec in cfg.sources:
        rep = LoadReport()
        got = load_pairs(spec, prompt_column=cfg.prompt_column, chosen_column=cfg.chosen_column,
                         rejected_column=cfg.rejected_column, source_column=cfg.source_column,
                         limit=cfg.limit_per_source, report=rep, column_hint=PREPARE_COLUMN_HINT)
        per_source[spec] = dataclasses.asdict(rep)
        pairs.extend(got)
    train, evals = split_pairs(pairs, cfg.eval_fraction, cfg.seed)
    write_pairs(train, out / "train.jsonl")
    write_pairs(evals, out / "eval.jsonl")
    counts: dict[str, int] = {}
    for p in pairs:
        counts[p.source or "unlabelled"] = counts.get(p.source or "unlabelled", 0) + 1
    report = {"n_train": len(train), "n_eval": len(evals), "per_source": per_source,
              "per_label": counts}
    write_json(out / DATA_REPORT, report)
    return {"n_train": len(train), "n_eval": len(evals),
            "skipped_identical": sum(r["skipped_identical"] for r in per_source.values())}


def load_split_prompts(data: Sequence[str], *, split: str, eval_fraction: float, split_seed: int,
                 tokenizer=None, max_prompt_tokens: int | None = None,
                 max_prompts: int | None = None, seed: int = 0) -> tuple[list[str], dict]:
    """Unique prompts of ``data`` on one side of the deterministic split, filtered by length; with
    ``max_prompts``, a random sample (``seed``) stratified by source. ``info`` holds the per-source mix
    before the length filter and of the prompts used."""
    pairs = []
    for spec in data:
        pairs.extend(load_pairs(spec))
    if split != "all":
        train, held = split_pairs(pairs, eval_fraction=eval_fraction, seed=split_seed)
        pairs = train if split == "train" else held
    seen: dict[str, str | None] = {}
    for p in pairs:
        seen.setdefault(p.prompt, p.source)
    prompts = list(seen)
    n_unique = len(prompts)
    if tokenizer is not None and max_prompt_tokens:
        lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        prompts = [p for p, n in zip(prompts, lengths) if n <= max_prompt_tokens]
    info = {"pairs": len(pairs), "unique_prompts": n_unique, "kept_prompts": len(prompts),
            "source_mix_unfiltered": source_mix(seen.values())}
    if not prompts:
        raise DataError(f"no prompts left from {list(data)} (split={split}, {info}); raise "
                        "--max-prompt-tokens or use more data")
    if max_prompts is not None:
        prompts = stratified_sample(prompts, max_prompts, sources=[seen[p] for p in prompts], seed=seed)
    info["used_prompts"] = len(prompts)
    info["source_mix"] = source_mix(seen[p] for p in prompts)
    return prompts, info
