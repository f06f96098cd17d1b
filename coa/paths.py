"""Where each stage writes: one run root, and every stage's folder under it.

    from coa import paths
    paths.INDEX                # runs/index
    paths.synth("coa")         # runs/synth/coa
    paths.curate("sets")       # runs/curate/sets
    paths.train("sft2")        # runs/train/sft2
    paths.evaluation("rl2")    # runs/eval/rl2

``dvc.yaml`` names the same paths (a YAML file cannot import them): ``tests/pipeline/test_paths.py``
checks that every stage's outputs lie under the path this module gives that stage, and that every
``runs/…`` value of ``params.yaml`` is one of them. Paths are relative to the project root (the folder
``dvc repro`` runs in), written with ``/`` as in ``dvc.yaml`` and ``params.yaml``.
"""

from __future__ import annotations

from coa.errors import BadInput

RUNS = "runs"  # the run root: every stage's outputs (DVC-cached, not in git)
METRICS = "metrics"  # small git-tracked copies of stage metrics (DVC forbids a metrics file inside an output folder)


def file_name(value: str, key: str) -> str:
    """``value`` of the setting ``key`` as one file or folder name (evaluate's ``name=``, a set's name): a
    name stays inside the folder it is joined to, so empty, ``.``, ``..``, an absolute path and any path
    separator are refused (``BadInput``, exit 2)."""
    name = str(value)
    separators = ("/", "\\", "\0")  # an absolute path starts with one
    if name.strip() in ("", ".", "..") or any(sep in name for sep in separators):
        raise BadInput(
            f"{key}={name!r}: must be a name, not a path (it names a file or folder inside its output folder): "
            "no '/', '\\', '..', and not empty"
        )
    return name


def run_path(*parts: str) -> str:
    """``run_path("curate", "sets")`` → ``runs/curate/sets``."""
    return "/".join((RUNS, *parts))


INDEX = run_path("index")  # coa.search build: the search index of data.corpus
SPLIT = run_path("split")  # coa.questions split: training pool and held-out questions
SPLIT_TRAIN = f"{SPLIT}/train.jsonl"
SPLIT_HELDOUT = f"{SPLIT}/heldout.jsonl"
QUESTIONS = run_path("questions")  # synth.questions: synthesised question sets (dvc stage questions@NAME)
SYNTH = run_path("synth")
CURATE = run_path("curate")
TRAIN = run_path("train")
EVAL = run_path("eval")
EVAL_TABLE = f"{EVAL}/table.md"  # evaluate.run step=report: the stage table
FIDELITY = run_path("fidelity")
REWARD_PROBE = run_path("reward_probe")
REPORT = run_path("report")  # evaluate.report: report.md and its plots
CHECKS = f"{REPORT}/checks.json"  # evaluate.checks
WHEN_TO_ACT = f"{REPORT}/when_to_act.json"  # evaluate.when_to_act
ONPOLICY = run_path("onpolicy")  # synth.onpolicy: on-policy error mining rounds (dvc stages onpolicy@NAME)
EXPORT = run_path("export")  # data_cards.export (not a pipeline stage)
REVIEW = "data/review/review.parquet"  # annotate.run action=pull: people's decisions (git-tracked, not a run)


def questions(name: str) -> str:
    """One synthesised question set (params.yaml ``question_sets``: compose, ...)."""
    return f"{QUESTIONS}/{name}"


def synth(mode: str) -> str:
    """Trajectories of one synthesis mode (cot, coa, branch)."""
    return f"{SYNTH}/{mode}"


def curate(step: str) -> str:
    """One curation step's folder (score, analyze, pairs, sets)."""
    return f"{CURATE}/{step}"


def train(stage: str) -> str:
    """One training stage's checkpoint folder (sft1 … rl2)."""
    return f"{TRAIN}/{stage}"


def evaluation(name: str) -> str:
    """One evaluated model's folder (base, react, sft1 … rl2)."""
    return f"{EVAL}/{name}"


def fidelity(model: str) -> str:
    """The world-model fidelity probe of one model."""
    return f"{FIDELITY}/{model}"


def reward_probe(stage: str) -> str:
    """One RL stage's reward before vs after."""
    return f"{REWARD_PROBE}/{stage}"


def onpolicy(round_name: str) -> str:
    """One on-policy error mining round (params.yaml ``onpolicy_rounds``): its rollouts, sets and trained model."""
    return f"{ONPOLICY}/{round_name}"


def export(fmt: str) -> str:
    """One export format's folder."""
    return f"{EXPORT}/{fmt}"
