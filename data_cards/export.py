"""Export the curated sets to the formats other trainers read (conversions in ``formats.py``).

    python -m data_cards.export to=trl_preference        # pairs → out/preference.parquet (prompt/chosen/rejected)
    python -m data_cards.export to=trl_sft               # coa, cot → out/sft_{coa,cot}.parquet (+ observation_spans)
    python -m data_cards.export to=trl_tools             # coa, cot → out/tools_{coa,cot}.parquet (messages + tools)
    python -m data_cards.export to=llamafactory          # out/{pairs,coa,cot}.json + out/dataset_info.json
    python -m data_cards.export to=llamafactory_tools    # out/tools_{coa,cot}.json (function calls) + dataset_info
    python -m data_cards.export to=trl_sft sets_dir=runs/onpolicy/round1 sets=[pairs,corrections]  # a round's sets
    python -m data_cards.export to=verl input=runs/split/train.jsonl split=train   # out/train.parquet + tool_config.yaml
    python -m data_cards.export to=questions input=data/raw/autocoa/hotpot_qa_dev.parquet  # out/questions.jsonl

``to`` is the output format (``format`` stays the project's one prompt preset, which ``verl`` writes its
instructions in). ``out`` defaults to ``runs/export/<to>``. Sets are read from ``sets_dir``; ``verl`` reads any question
file ``coa.questions.load_questions`` reads (FlashRAG jsonl(.gz)/parquet) or a set parquet (its questions);
``questions`` reads a verl RL parquet. Everything is read and converted before anything is written; ``out``
must be new, empty or written by an export to the same format (its ``.autocoa-owner.json``), else
``overwrite=true`` (same-name files replaced, nothing deleted).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from coa import paths
from coa.config import cli
from coa.environment import SearchEnvConfig
from coa.errors import entry_point, reading
from coa.formats import FORMAT
from coa.io import atomic_output, owned_files, write_text
from coa.prompts import PromptConfig
from coa.questions import load_questions
from data_cards import formats
from data_cards.run_facts import SETS, set_names, trajectory_sets
from data_cards.verl_tool import tool_config

FORMATS = ("trl_preference", "trl_sft", "trl_tools", "llamafactory", "llamafactory_tools", "verl", "questions")


@dataclass
class ExportConfig:
    """Settings of ``python -m data_cards.export`` (``key=value``; ``--help``, ``--print-config``).

    What: to, input, sets_dir, out, overwrite. verl: split, format and prompt.demonstrations (the shared
    prompt), ability.
    """

    to: str = field(default="", metadata={"help": f"the output format: one of {', '.join(FORMATS)}"})
    sets_dir: str = field(
        default=paths.curate("sets"), metadata={"help": "the sets step's folder (pairs/coa/cot.parquet)"}
    )
    sets: list = field(
        default_factory=lambda: list(SETS),
        metadata={"help": "the sets in sets_dir; an on-policy round's folder: sets=[pairs,corrections]"},
    )
    input: str = field(
        default="",
        metadata={
            "help": f"verl: question file or set parquet (default {paths.SPLIT_TRAIN}); questions: a verl RL parquet"
        },
    )
    out: str = field(default="", metadata={"help": f"output folder; empty = {paths.export('<to>')}"})
    split: str = field(default="train", metadata={"help": "verl: extra_info.split and the file name"})
    format: str = field(default=FORMAT, metadata={"help": "verl: the instructions' format preset (params.yaml format)"})
    prompt: PromptConfig = field(
        default_factory=PromptConfig,
        metadata={
            "help": "verl: prompt.demonstrations puts the worked example in the instruction (params.yaml prompt)"
        },
    )
    ability: str = field(default="fact-reasoning", metadata={"help": "verl: the ability column (Search-R1's value)"})
    search: SearchEnvConfig = field(
        default_factory=SearchEnvConfig,
        metadata={"help": "verl: the tools of tool_config.yaml and their environment (params.yaml's search)"},
    )
    overwrite: bool = field(
        default=False,
        metadata={"help": "write into a non-empty out folder this export did not write (same-name files replaced)"},
    )

    def __post_init__(self) -> None:
        if self.to not in FORMATS:
            raise ValueError(f"to must be one of {', '.join(FORMATS)}, got {self.to!r}")
        if self.to == "questions" and not self.input:
            raise ValueError("to=questions needs input=PATH (a verl RL parquet)")
        paths.file_name(self.split, "split")  # verl: <out>/<split>.parquet
        self.sets = list(set_names(self.sets))
        if "corrections" in self.sets and self.to in ("trl_tools", "llamafactory", "llamafactory_tools"):
            raise ValueError(
                f"to={self.to} cannot leave a correction's student prefix out of the loss (its assistant turns are "
                "all trained); export corrections with to=trl_sft (prefill_spans)"
            )

    @property
    def out_dir(self) -> Path:
        return Path(self.out or paths.export(self.to))


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (run `python -m curate.run step=sets`, or set sets_dir=/input=)")
    with reading(path):
        return pq.read_table(path).to_pylist()


def write_parquet(rows: list[dict], path: Path) -> Path:
    with atomic_output(path) as tmp:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    return path


def write_records(path: Path, records, lines: bool = False) -> Path:
    """``records`` as one JSON document, or (``lines``) one JSON object per line."""
    text = (
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if lines
        else json.dumps(records, ensure_ascii=False, indent=1)
    )
    return write_text(path, text)


def _questions(path: Path) -> list[dict]:
    if (
        path.suffix == ".parquet"
        and "golden_answers" in pq.read_schema(path).names
        and "question_id" in pq.read_schema(path).names
    ):  # a set: its distinct questions
        seen: dict[str, dict] = {}
        for r in read_rows(path):
            seen.setdefault(
                r["question_id"],
                {
                    "id": r["question_id"],
                    "question": r["question"],
                    "golden_answers": r["golden_answers"],
                    "dataset": r.get("dataset"),
                },
            )
        return list(seen.values())
    return load_questions(path)


def converted(cfg: ExportConfig) -> dict[str, list | dict]:
    """Every output file's name in ``out`` and its content (rows, or dataset_info's mapping)."""
    sets = Path(cfg.sets_dir)
    if cfg.to == "trl_preference":
        src = sets / "pairs.parquet"
        return {"preference.parquet": formats.trl_preference(read_rows(src), str(src))}
    trajectories = trajectory_sets(cfg.sets)
    if cfg.to == "trl_sft":
        srcs = {name: sets / f"{name}.parquet" for name in trajectories}
        return {f"sft_{name}.parquet": formats.trl_sft(read_rows(src), str(src)) for name, src in srcs.items()}
    if cfg.to == "trl_tools":
        srcs = {name: sets / f"{name}.parquet" for name in trajectories}
        return {f"tools_{name}.parquet": formats.trl_tools(read_rows(src), str(src)) for name, src in srcs.items()}
    if cfg.to == "llamafactory":
        files = {}
        for name in cfg.sets:
            src = sets / f"{name}.parquet"
            files[f"{name}.json"] = (
                formats.llamafactory_ranking(read_rows(src), str(src))
                if name == "pairs"
                else formats.llamafactory_messages(read_rows(src), str(src))
            )
        info = formats.llamafactory_dataset_info({name.removesuffix(".json"): name for name in files})
        return {**files, "dataset_info.json": info}
    if cfg.to == "llamafactory_tools":
        srcs = {f"tools_{name}": sets / f"{name}.parquet" for name in trajectories}
        files = {f"{name}.json": formats.llamafactory_tools(read_rows(src), str(src)) for name, src in srcs.items()}
        info = formats.llamafactory_dataset_info({name.removesuffix(".json"): name for name in files})
        return {**files, "dataset_info.json": info}
    if cfg.to == "verl":
        source = Path(cfg.input or paths.SPLIT_TRAIN)
        prompt = PromptConfig(format=cfg.format, mode="coa", demonstrations=cfg.prompt.demonstrations)
        rows = formats.verl_rows(_questions(source), prompt, cfg.split, cfg.ability, str(source))
        return {f"{cfg.split}.parquet": rows, "tool_config.yaml": tool_config(cfg.search, cfg.format)}
    source = Path(cfg.input)  # questions
    return {"questions.jsonl": formats.verl_to_questions(read_rows(source), str(source))}


def write_file(content: list | dict, path: Path) -> Path:
    if path.suffix == ".parquet":
        return write_parquet(content, path)
    if path.suffix == ".yaml":
        return write_text(path, yaml.safe_dump(content, sort_keys=False))
    return write_records(path, content, lines=path.suffix == ".jsonl")


def run(cfg: ExportConfig) -> dict:
    files = converted(cfg)  # bad input fails here, before the out folder is judged or touched
    written: dict[str, int] = {}
    tool = f"data_cards.export to={cfg.to}"  # the owner its marker names in out
    with owned_files(cfg.out_dir, tool, "overwrite=true", cfg.overwrite) as out:
        for name, content in files.items():
            path = write_file(content, out / name)
            if isinstance(content, list):  # dataset_info.json is an index, not rows
                written[str(path)] = len(content)
    for path, n in written.items():
        print(f"{cfg.to}: {n} rows → {path}")
    return written


@entry_point("export")
def main(argv: list[str] | None = None) -> int:
    run(cli(ExportConfig, "export", sys.argv[1:] if argv is None else argv, doc=__doc__))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
