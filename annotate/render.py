"""Set rows → what a person reads in Argilla. Pure functions: a row dict in, a record dict out.

A record dict is ``{id, row_id, fields, metadata, verdict}``:

  id        ``<row id>-<content hash>``: Argilla never rewrites an existing record's fields on upsert,
            so a row whose content changed must arrive as a new record (the old one keeps its answers)
  fields    trajectories: ``question`` (markdown: question, golds, answer, scores), ``steps``;
            pairs: ``question``, ``prefix`` (the shared steps, once), ``comparison`` (chosen | rejected)
            ``steps``/``prefix``/``comparison`` are custom-field dicts of numbered steps
            ``{n, kind, text, folded}``; kind is reasoning | search | observation | answer
  metadata  what the UI filters on (``TRAJECTORY_METADATA`` / ``PAIR_METADATA``)
  verdict   the scorers' call as a suggestion for ``decision``: ``(label, agent = metric, score)``

Every text is kept under Argilla's 20,000-character field limit: an observation longer than
``observation_chars`` is cut (head kept, the cut counted) and shown folded; anything else over the limit
is cut the same way, and a record's steps together stay under it too.
"""

from __future__ import annotations

import hashlib
import json
import math

from coa.formats import completion_text, get_format

FIELD_LIMIT = 20_000  # Argilla 2.8 rejects a chat message longer than this; we hold every text to it
TRAJECTORY_COLUMNS = (
    "id",
    "question",
    "golden_answers",
    "segments",
    "answer",
    "format",
    "n_actions",
    "finish_reason",
    "teacher",
    "dataset",
)
PAIR_COLUMNS = (
    "id",
    "question",
    "golden_answers",
    "format",
    "prompt",
    "chosen",
    "rejected",
    "direction",
    "decision_index",
    "chosen_score",
    "rejected_score",
)
TRAJECTORY_METADATA = {
    "dataset": "terms",
    "teacher": "terms",
    "finish_reason": "terms",
    "n_actions": "integer",
    "em": "float",
    "f1": "float",
}
PAIR_METADATA = {
    "direction": "terms",
    "decision_index": "integer",
    "n_actions": "integer",
    "chosen_score": "float",
    "rejected_score": "float",
}


def trim(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    note = "\n… [{} more characters trimmed for review]"
    keep = max(limit - len(note) - 8, 0)
    return text[:keep] + note.format(len(text) - keep)


def content_hash(*parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def record_id(row_id: str, *content) -> str:
    return f"{row_id}-{content_hash(*content)}"


def row_of(record_id: str) -> str:
    """The row id inside a record id (the hash after the last ``-`` is hex, so this is exact)."""
    return record_id.rsplit("-", 1)[0]


def steps(text: str, fmt: str, observation_chars: int, start: int = 1) -> list[dict]:
    """Model text split into numbered steps with the format preset's parser (lossless slices)."""
    out = []
    for step in get_format(fmt).parse(text).steps:
        if step.kind == "think":
            continue  # the <think> tags themselves carry nothing a reviewer needs
        kind = {"text": "reasoning"}.get(step.kind, step.kind)
        body = step.content.strip() if step.kind in ("search", "observation", "answer") else step.text.strip()
        if not body:
            continue
        folded = kind == "observation"
        body = trim(body, observation_chars if folded else FIELD_LIMIT)
        out.append({"n": start + len(out), "kind": kind, "text": body, "folded": folded})
    return out


def _fit(items: list[dict], budget: int) -> list[dict]:
    """Shrink the longest texts until the steps together fit ``budget`` characters."""
    while sum(len(s["text"]) for s in items) > budget:
        longest = max(items, key=lambda s: len(s["text"]))
        longest["text"] = trim(longest["text"], max(len(longest["text"]) // 2, 200))
    return items


def _number(value, default=None):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    return value


def _golds(row: dict) -> str:
    return " · ".join(row.get("golden_answers") or []) or "(none)"


def trajectory_record(row: dict, metric: str, threshold: float, observation_chars: int) -> dict:
    text = completion_text(row["segments"])
    items = _fit(steps(text, row["format"], observation_chars), FIELD_LIMIT - 1000)
    score = _number(row.get(metric), 0.0)
    scores = " · ".join(f"**{m}** {_number(row.get(m), 0.0):.2f}" for m in ("em", "f1") if m in row)
    question = (
        f"### {row['question']}\n\n**gold:** {_golds(row)}\n\n**answer:** {row.get('answer') or '(none)'}"
        f"\n\n{scores} · {row.get('n_actions', 0)} searches · finish: {row.get('finish_reason') or '?'}"
    )
    metadata = {
        "dataset": row.get("dataset") or "",
        "teacher": row.get("teacher") or "",
        "finish_reason": row.get("finish_reason") or "",
        "n_actions": int(row.get("n_actions") or 0),
        "em": float(_number(row.get("em"), 0.0)),
        "f1": float(_number(row.get("f1"), 0.0)),
    }
    verdict = ("accept" if score >= threshold else "reject", metric, min(max(float(score), 0.0), 1.0))
    fields = {"question": trim(question, FIELD_LIMIT), "steps": {"steps": items}}
    return {
        "id": record_id(row["id"], row["question"], row["golden_answers"], row["segments"], row.get("answer")),
        "row_id": row["id"],
        "fields": fields,
        "metadata": metadata,
        "verdict": verdict,
        "n_steps": n_steps(fields),
    }


def n_steps(fields: dict) -> int:
    """How many numbered steps a record shows: a trajectory's steps; a pair's shared steps and its longer branch
    (both branches continue the prefix's numbering). Push sizes the 'first bad step' labels by it, pull checks
    an answer against it."""
    if "steps" in fields:
        return len(fields["steps"]["steps"])
    comparison = fields["comparison"]
    return len(fields["prefix"]["steps"]) + max(len(comparison["chosen"]), len(comparison["rejected"]))


def _prefix_text(prompt: str, question: str, fmt: str) -> str:
    """The model-written part of a pair's shared context: after the question, from the first think tag."""
    tail = prompt[prompt.rfind(question) + len(question) :] if question in prompt else prompt
    start = tail.find(get_format(fmt).think_open)
    return tail[start:] if start >= 0 else ""


# what the chosen side of a pair does, per direction (curate/pairs.py)
CHOSEN_DOES = {
    "act": "acts",
    "no_act": "answers without a tool",
    "tool": "calls the better tool",
    "answer": "answers as the teacher does",  # synth/corrections.py: both sides answer
    "read": "quotes the result that states the answer",  # synth/reading_pairs.py: both sides quote a result
}


def pair_record(row: dict, metric: str, threshold: float, observation_chars: int) -> dict:
    fmt = row["format"]
    prefix = steps(_prefix_text(row["prompt"], row["question"], fmt), fmt, observation_chars)
    first = len(prefix) + 1  # both branches continue the numbering where the shared steps stop
    chosen = steps(row["chosen"], fmt, observation_chars, first)
    rejected = steps(row["rejected"], fmt, observation_chars, first)
    budget = (FIELD_LIMIT - 1000) // 2
    _fit(prefix, budget), _fit(chosen, budget), _fit(rejected, budget)
    c, r = float(_number(row.get("chosen_score"), 0.0)), float(_number(row.get("rejected_score"), 0.0))
    question = (
        f"### {row['question']}\n\n**gold:** {_golds(row)}\n\n**direction:** {row['direction']} "
        f"(chosen {CHOSEN_DOES.get(row['direction'], row['direction'])}) · "
        f"**{metric}** chosen {c:.2f} / rejected {r:.2f} · shared steps: {len(prefix)}"
    )
    n_actions = sum(s["kind"] in ("search", "call") for s in chosen)
    metadata = {
        "direction": row["direction"],
        "decision_index": int(row.get("decision_index") or 0),
        "n_actions": n_actions,
        "chosen_score": c,
        "rejected_score": r,
    }
    good = c >= threshold and r < threshold
    verdict = ("accept" if good else "reject", metric, min(max(c - r, 0.0), 1.0))
    fields = {
        "question": trim(question, FIELD_LIMIT),
        "prefix": {"steps": prefix, "empty": not prefix},
        "comparison": {"chosen": chosen, "rejected": rejected},
    }
    return {
        "id": record_id(
            row["id"], row["question"], row["golden_answers"], row["prompt"], row["chosen"], row["rejected"]
        ),
        "row_id": row["id"],
        "fields": fields,
        "metadata": metadata,
        "verdict": verdict,
        "n_steps": n_steps(fields),
    }


# Custom-field templates (Handlebars, rendered by the UI in a sandboxed frame; {{ }} escapes HTML, so
# the trajectories' own tags show as text). Observations are folded in <details>: open one to read it.
_STYLE = """<style>
body{font-family:system-ui,sans-serif;font-size:13px;margin:0}
.s{border-left:4px solid #bbb;padding:4px 8px;margin:6px 0;white-space:pre-wrap;word-break:break-word}
.s b{font-size:11px;text-transform:uppercase;color:#555;margin-right:6px}
.reasoning{border-color:#8a8fd8}.search{border-color:#2d7be5;background:#eef5ff}
.observation{border-color:#d9a400;background:#fffaf0;color:#444}.answer{border-color:#2e9e4f;background:#eefaf1}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:14px}.cols h4{margin:4px 0}
</style>"""
_STEP = (
    '{{#if this.folded}}<details class="s observation"><summary><b>{{this.n}} observation</b>'
    '(click to open)</summary>{{this.text}}</details>{{else}}<div class="s {{this.kind}}"><b>{{this.n}} '
    "{{this.kind}}</b>{{this.text}}</div>{{/if}}"
)
STEPS_TEMPLATE = _STYLE + "{{#each record.fields.steps.steps}}" + _STEP + "{{/each}}"
PREFIX_TEMPLATE = (
    _STYLE + "{{#if record.fields.prefix.empty}}<i>no shared steps: both branches start right "
    "after the prompt</i>{{/if}}{{#each record.fields.prefix.steps}}" + _STEP + "{{/each}}"
)
COMPARISON_TEMPLATE = (
    _STYLE
    + '<div class="cols"><div><h4>chosen</h4>{{#each record.fields.comparison.chosen}}'
    + _STEP
    + "{{/each}}</div><div><h4>rejected</h4>{{#each record.fields.comparison.rejected}}"
    + _STEP
    + "{{/each}}</div></div>"
)
