"""The review datasets' settings (fields, questions, metadata, distribution) and getting one ready.

Questions, the same in every dataset except ``decision``'s labels:
  decision         accept | reject (pairs also: swap = the rejected branch is the better one)  required
  corrected_answer the right answer when the gold is wrong; the row is scored again against it optional
  first_bad_step   the number of the first wrong step (numbers are shown on every step)          optional
                   labels 1..the longest record's steps when the dataset is made (Argilla's labels are the
                   same for every record); pull refuses an answer past its own record's steps
  comment          free text                                                                     optional
"""

from __future__ import annotations

from annotate.config import ReviewConfig
from annotate.render import COMPARISON_TEMPLATE, PAIR_METADATA, PREFIX_TEMPLATE, STEPS_TEMPLATE, TRAJECTORY_METADATA
from curate.review import DECISIONS as REVIEW_DECISIONS

# curate's review contract; swap (exchange chosen and rejected) only means something for a pair
DECISIONS = {"trajectories": tuple(d for d in REVIEW_DECISIONS if d != "swap"), "pairs": REVIEW_DECISIONS}
GUIDELINES = {
    "trajectories": (
        "Read the question, the gold answers and every step. **accept**: the trajectory is right (also when the "
        "scorer said wrong). **reject**: it must not be trained on (wrong answer, bad reasoning, a useless or "
        "wrong search). If the *gold* is wrong, write the right answer in *corrected_answer*: the row is scored "
        "again against it. *first_bad_step* is the number of the first step that goes wrong (the list runs to the "
        "longest trajectory in the dataset: pick a number shown on this record). The suggestion is "
        "the automatic scorer's verdict."
    ),
    "pairs": (
        "Both branches share the steps shown once under *prefix*; then one searches and the other answers "
        "without searching. **accept**: the chosen branch is the better one. **swap**: the rejected branch is "
        "the better one. **reject**: neither should be trained on. *corrected_answer* replaces the gold and "
        "both branches are scored again against it."
    ),
}


def settings(kind: str, cfg: ReviewConfig, steps: int):
    """The dataset's settings; ``first_bad_step`` offers 1..``steps`` (Argilla shows at least 3 labels)."""
    import argilla as rg

    if kind == "pairs":
        fields = [
            rg.TextField("question", title="Question", use_markdown=True),
            rg.CustomField("prefix", title="Shared steps (prefix)", template=PREFIX_TEMPLATE),
            rg.CustomField("comparison", title="Chosen | rejected", template=COMPARISON_TEMPLATE),
        ]
        meta = PAIR_METADATA
    else:
        fields = [
            rg.TextField("question", title="Question", use_markdown=True),
            rg.CustomField("steps", title="Steps", template=STEPS_TEMPLATE),
        ]
        meta = TRAJECTORY_METADATA
    labels = [str(i) for i in range(1, max(steps, 3) + 1)]
    make = {"terms": rg.TermsMetadataProperty, "integer": rg.IntegerMetadataProperty, "float": rg.FloatMetadataProperty}
    questions = [
        rg.LabelQuestion("decision", labels=list(DECISIONS[kind]), title="Decision", required=True),
        rg.TextQuestion("corrected_answer", title="Corrected answer (only if the gold is wrong)", required=False),
        rg.LabelQuestion(
            "first_bad_step",
            labels=labels,
            title="First bad step (optional)",
            required=False,
            visible_labels=min(len(labels), 20),
        ),
        rg.TextQuestion("comment", title="Comment", required=False),
    ]
    return rg.Settings(
        fields=fields,
        questions=questions,
        metadata=[make[t](name) for name, t in meta.items()],
        guidelines=GUIDELINES[kind],
        distribution=rg.TaskDistribution(min_submitted=cfg.min_submitted),
    )


def find(client, name: str, cfg: ReviewConfig):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "dataset not found" is a warning in the SDK; None says it
        return client.datasets(name=name, workspace=cfg.workspace)


def ensure(client, set_name: str, cfg: ReviewConfig, steps: int):
    """The dataset for ``set_name``, created on first use with step labels for records of up to ``steps`` steps;
    an existing one must have our questions and enough step labels."""
    import argilla as rg

    kind, name = cfg.kind(set_name), cfg.dataset_name(set_name)
    dataset = find(client, name, cfg)
    if dataset is None:
        workspace = client.workspaces(cfg.workspace)
        if workspace is None:
            raise ValueError(
                f"workspace {cfg.workspace!r} does not exist on {cfg.api_url}; "
                "python -m annotate.serve creates it (or set workspace=)"
            )
        dataset = rg.Dataset(
            name=name, workspace=workspace, settings=settings(kind, cfg, steps), client=client
        ).create()
        return dataset
    have = {q.name for q in dataset.settings.questions}
    missing = {"decision", "corrected_answer", "first_bad_step", "comment"} - have
    if missing:
        raise ValueError(
            f"dataset {name!r} on {cfg.api_url} lacks the questions {sorted(missing)}: it was not made by "
            "annotate.run push; use another dataset_prefix="
        )
    labels = len(dataset.settings.questions["first_bad_step"].labels)
    if steps > labels:  # labels cannot change once answers exist
        raise ValueError(
            f"dataset {name!r} on {cfg.api_url} offers first bad steps 1..{labels}, but {set_name!r} now "
            f"has a record of {steps} steps; push it to a new dataset (another dataset_prefix=)"
        )
    current = dataset.settings.distribution.min_submitted
    if current != cfg.min_submitted:
        try:
            dataset.settings.distribution = rg.TaskDistribution(min_submitted=cfg.min_submitted)
            dataset.update()
        except Exception as e:  # the server refuses once any response exists
            raise ValueError(
                f"dataset {name!r}: min_submitted is {current} and cannot become {cfg.min_submitted} "
                f"now that answers exist ({e}); keep min_submitted={current}"
            ) from None
    return dataset
