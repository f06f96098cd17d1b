"""What a card says, read from the run that made the sets: the sets themselves, every curate step's
``metrics.json``, the plots, the index manifest, ``params.yaml``, ``dvc.lock`` and the git commit.

Nothing is typed by hand: ``collect(cfg)`` returns plain dicts and tables that ``card.render`` prints.
A missing set fails naming the file; missing optional inputs (a step's metrics, plots, dvc.lock, git)
are recorded as missing so the card says so instead of inventing a value.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from coa.errors import reading
from coa.trajectory import TRAJECTORY_SCHEMA
from curate import io

SETS = ("pairs", "coa", "cot")  # curate's sets, the default of publish and export
# every set a sets folder may hold: an on-policy round's folder (synth.onpolicy) holds pairs and corrections
SET_NAMES = (*SETS, "corrections")
PLOTS = ("two_by_two.png", "success_by_actions.png", "first_action.png", "drop_reasons.png")


def set_names(names) -> tuple[str, ...]:
    """``sets=`` of publish and export, checked: distinct names among ``SET_NAMES``."""
    names = tuple(names)
    if not names or len(set(names)) != len(names) or not set(names) <= set(SET_NAMES):
        raise ValueError(f"sets must be distinct names among {', '.join(SET_NAMES)}, got {list(names)}")
    return names


def trajectory_sets(names) -> list[str]:
    """The sets among ``names`` whose rows are trajectories (all but the pairs and the scored rows)."""
    return [n for n in names if n not in ("pairs", "trajectories")]


# Licence of the questions (and, where a corpus comes with them, its passages) per ``dataset`` value.
# Rows derived from a share-alike source inherit its licence; see data/raw/MANIFEST.md.
SOURCE_LICENSES = {
    "hotpotqa": "cc-by-sa-4.0",
    "bamboogle": "mit",
    "nq": "cc-by-sa-3.0",
    "musique": "cc-by-4.0",
    "2wikimultihopqa": "apache-2.0",
    "triviaqa": "apache-2.0",
}
# Hub ids for ``source_datasets`` where one is certain; other sources are named as they are in the rows
SOURCE_HUB_IDS = {"hotpotqa": "hotpotqa/hotpot_qa"}
SOURCE_CITATIONS = {
    "hotpotqa": """@inproceedings{yang2018hotpotqa,
  title = {{HotpotQA}: A Dataset for Diverse, Explainable Multi-hop Question Answering},
  author = {Yang, Zhilin and Qi, Peng and Zhang, Saizheng and Bengio, Yoshua and Cohen, William W. and
            Salakhutdinov, Ruslan and Manning, Christopher D.},
  booktitle = {Proceedings of EMNLP}, year = {2018}
}"""
}
AUTOCOA_CITATION = """@article{zhang2025autocoa,
  title = {Agent models: Internalizing Chain-of-Action Generation into Reasoning Models},
  author = {Zhang, Yuxiang and Yang, Yuqi and Shu, Jiangming and Wen, Xinyan and Sang, Jitao},
  journal = {arXiv preprint arXiv:2503.06580}, year = {2025}
}"""


@dataclass
class RunFacts:
    sets: dict[str, pa.Table]  # config name → rows to publish
    set_files: dict[str, Path]  # config name → the run's parquet file
    metrics: dict[str, dict]  # curate step → its metrics.json ({} if missing)
    plots: list[Path]  # the analyze step's plots that exist
    index: dict  # the search index's index.json ({} if missing)
    params: dict  # params.yaml ({} if missing)
    dvc_outs: dict[str, str]  # path → md5 recorded in dvc.lock
    git_commit: str  # the commit that recorded dvc.lock (or HEAD)
    licenses: dict[str, str] = field(default_factory=dict)  # dataset → licence of the published rows
    question_sets: dict[str, dict] = field(default_factory=dict)  # synthesised set → its synth.questions metrics


def md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def read_set(path: Path) -> pa.Table:
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: set not found; run `python -m curate.run step=sets` (or dvc repro) first, "
            f"or point sets_dir= (and sets=) at the sets to read"
        )
    with reading(path):
        return pq.read_table(path)


def scored_trajectories(curate_dir: Path) -> pa.Table:
    """Every scored trajectory joined to its scores, reasons and ``kept`` flag (the ``trajectories`` config)."""
    import polars as pl

    scores_file = curate_dir / "score" / "scores.parquet"
    inputs = _json(curate_dir / "score" / "metrics.json").get("input")
    if not scores_file.exists() or not inputs:
        raise FileNotFoundError(
            f"{scores_file} (and the inputs listed in its metrics.json) are needed for "
            f"trajectories=true; run `python -m curate.run step=score` first"
        )
    keep = ["id", "em", "f1", "cover_em", "subem", "autocoa_lenient", "correct", "kept", "drop_reason", "reasons"]
    scores = pl.read_parquet(scores_file)
    scores = scores.select([c for c in keep if c in scores.columns])
    rows = io.scan(inputs, TRAJECTORY_SCHEMA.names).collect().join(scores, on="id", how="inner")
    return rows.sort("mode", "question_id", "id").to_arrow()


def dvc_outs(lock_path: Path) -> dict[str, str]:
    if not lock_path.exists():
        return {}
    lock = yaml.safe_load(lock_path.read_text()) or {}
    outs = {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            outs[out["path"]] = out.get("md5", "")
    return outs


def git_commit(lock_path: Path) -> str:
    """The commit that last recorded ``dvc.lock`` (stable while the data is unchanged), else HEAD."""
    where = lock_path.parent if lock_path.parent.exists() else Path(".")
    for args in (["log", "-1", "--format=%H", "--", lock_path.name], ["rev-parse", "HEAD"]):
        try:
            out = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return "unknown (git not available)"
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return "unknown (not a git checkout)"


def inherited_licenses(tables: dict[str, pa.Table], overrides: dict[str, str]) -> dict[str, str]:
    """dataset name → licence, for every ``dataset`` value in the published rows; unknown ones fail."""
    known = {**SOURCE_LICENSES, **overrides}
    found: dict[str, str] = {}
    for name, table in tables.items():
        if "dataset" not in table.column_names:
            continue
        for value in sorted(set(table.column("dataset").to_pylist()) - {None}):
            key = value.lower()
            if key not in known:
                raise ValueError(
                    f"{name}: rows of dataset {value!r} have no known licence; "
                    f"set licenses.{key}=<Hub licence id> (known: {', '.join(sorted(known))})"
                )
            found[key] = known[key]
    return found


def card_license(licenses: dict[str, str]) -> str | list[str]:
    """Share-alike governs the adaptation (CC BY-SA 3.0 material may be adapted under 4.0); otherwise the
    rows keep each source's licence, listed."""
    values = sorted(set(licenses.values()))
    share_alike = [v for v in values if v.startswith("cc-by-sa-")]
    if share_alike:
        return max(share_alike)
    if not values:
        return "unknown"
    return values[0] if len(values) == 1 else values


def question_sets(root: Path, params: dict) -> dict[str, dict]:
    """The ``metrics.json`` of each synthesised question set the run's ``params.yaml`` names
    (``question_sets``), by name; a set named there but not made is left out."""
    names = sorted((params.get("question_sets") or {}))
    found = {name: _json(root / name / "metrics.json") for name in names} if str(root) else {}
    return {name: m for name, m in found.items() if m}


def collect(cfg) -> RunFacts:
    sets_dir, curate_dir = Path(cfg.sets_dir), Path(cfg.curate_dir)
    files = {name: sets_dir / f"{name}.parquet" for name in getattr(cfg, "sets", SETS)}  # checked by the config
    tables = {name: read_set(path) for name, path in files.items()}
    if cfg.trajectories:
        tables["trajectories"] = scored_trajectories(curate_dir)
        files["trajectories"] = curate_dir / "score" / "scores.parquet"
    metrics = {step: _json(curate_dir / step / "metrics.json") for step in ("score", "analyze", "pairs")}
    metrics["sets"] = _json(sets_dir / "metrics.json")
    lock = Path(cfg.dvc_lock)
    params = yaml.safe_load(Path(cfg.params_file).read_text()) if Path(cfg.params_file).exists() else {}
    return RunFacts(
        question_sets=question_sets(Path(getattr(cfg, "questions_dir", "")), params or {}),
        sets=tables,
        set_files=files,
        metrics=metrics,
        plots=[curate_dir / "analyze" / p for p in PLOTS if (curate_dir / "analyze" / p).exists()],
        index=_json(Path(cfg.index) / "index.json"),
        params=params or {},
        dvc_outs=dvc_outs(lock),
        git_commit=git_commit(lock),
        licenses=inherited_licenses(tables, dict(cfg.licenses)),
    )
