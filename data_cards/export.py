"""Export the curated sets to the formats other trainers read (conversions in ``formats.py``).

    python -m data_cards.export format=trl_preference        # pairs → out/preference.parquet (prompt/chosen/rejected)
    python -m data_cards.export format=trl_sft               # coa, cot → out/sft_{coa,cot}.parquet (+ observation_spans)
    python -m data_cards.export format=llamafactory          # out/{pairs,coa,cot}.json + out/dataset_info.json
    python -m data_cards.export format=verl input=runs/split/train.jsonl split=train   # out/train.parquet
    python -m data_cards.export format=questions input=data/raw/autocoa/hotpot_qa_dev.parquet  # out/questions.jsonl

``out`` defaults to ``runs/export/<format>``. Sets are read from ``sets_dir``; ``verl`` reads any question
file ``coa.questions.load_questions`` reads (FlashRAG jsonl(.gz)/parquet) or a set parquet (its questions);
``questions`` reads a verl RL parquet.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from coa.errors import entry_point, reading
from coa.io import atomic_output, write_text
from coa.prompts import PromptConfig
from data_cards import formats

FORMATS = ("trl_preference", "trl_sft", "llamafactory", "verl", "questions")


@dataclass
class ExportConfig:
    """Settings of ``python -m data_cards.export`` (``key=value``; ``--help``, ``--print-config``).

    What: format, input, sets_dir, out. verl: split, prompt_format, demonstrations, ability.
    """

    format: str = field(default="", metadata={"help": f"one of {', '.join(FORMATS)}"})
    sets_dir: str = field(default="runs/curate/sets", metadata={"help": "the sets step's folder (pairs/coa/cot.parquet)"})
    input: str = field(default="", metadata={
        "help": "verl: question file or set parquet (default runs/split/train.jsonl); questions: a verl RL parquet"})
    out: str = field(default="", metadata={"help": "output folder; empty = runs/export/<format>"})
    split: str = field(default="train", metadata={"help": "verl: extra_info.split and the file name"})
    prompt_format: str = field(default="autocoa", metadata={"help": "verl: instruction preset (autocoa | search_r1)"})
    demonstrations: bool = field(default=False, metadata={"help": "verl: put the worked example in the instruction"})
    ability: str = field(default="fact-reasoning", metadata={"help": "verl: the ability column (Search-R1's value)"})

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.format == "questions" and not self.input:
            raise ValueError("format=questions needs input=PATH (a verl RL parquet)")

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"runs/export/{self.format}")


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (run `python -m curate.run step=sets`, or set sets_dir=/input=)")
    with reading(path):
        return pq.read_table(path).to_pylist()


def write_parquet(rows: list[dict], path: Path) -> Path:
    with atomic_output(path) as tmp:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    return path


def write_json(data, path: Path, lines: bool = False) -> Path:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data) if lines else \
        json.dumps(data, ensure_ascii=False, indent=1)
    return write_text(path, text)


def _questions(path: Path) -> list[dict]:
    from coa.questions import load_questions

    if path.suffix == ".parquet" and "golden_answers" in pq.read_schema(path).names \
            and "question_id" in pq.read_schema(path).names:  # a set: its distinct questions
        seen: dict[str, dict] = {}
        for r in read_rows(path):
            seen.setdefault(r["question_id"], {"id": r["question_id"], "question": r["question"],
                                               "golden_answers": r["golden_answers"], "dataset": r.get("dataset")})
        return list(seen.values())
    return load_questions(path)


def run(cfg: ExportConfig) -> dict:
    sets, out = Path(cfg.sets_dir), cfg.out_dir
    written: dict[str, int] = {}
    if cfg.format == "trl_preference":
        rows = formats.trl_preference(read_rows(sets / "pairs.parquet"), str(sets / "pairs.parquet"))
        written[str(write_parquet(rows, out / "preference.parquet"))] = len(rows)
    elif cfg.format == "trl_sft":
        for name in ("coa", "cot"):
            rows = formats.trl_sft(read_rows(sets / f"{name}.parquet"), str(sets / f"{name}.parquet"))
            written[str(write_parquet(rows, out / f"sft_{name}.parquet"))] = len(rows)
    elif cfg.format == "llamafactory":
        files = {}
        for name in ("pairs", "coa", "cot"):
            src = sets / f"{name}.parquet"
            rows = formats.llamafactory_ranking(read_rows(src), str(src)) if name == "pairs" else \
                formats.llamafactory_messages(read_rows(src), str(src))
            written[str(write_json(rows, out / f"{name}.json"))] = len(rows)
            files[name] = f"{name}.json"
        write_json(formats.llamafactory_dataset_info(files), out / "dataset_info.json")
    elif cfg.format == "verl":
        source = Path(cfg.input or "runs/split/train.jsonl")
        prompt = PromptConfig(format=cfg.prompt_format, mode="coa", demonstrations=cfg.demonstrations)
        rows = formats.verl_rows(_questions(source), prompt, cfg.split, cfg.ability, str(source))
        written[str(write_parquet(rows, out / f"{cfg.split}.parquet"))] = len(rows)
    else:  # questions
        source = Path(cfg.input)
        rows = formats.verl_to_questions(read_rows(source), str(source))
        written[str(write_json(rows, out / "questions.jsonl", lines=True))] = len(rows)
    for path, n in written.items():
        print(f"{cfg.format}: {n} rows → {path}")
    return written


@entry_point("export")
def main(argv: list[str] | None = None) -> int:
    from coa.config import cli

    run(cli(ExportConfig, "export", sys.argv[1:] if argv is None else argv, doc=__doc__))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
