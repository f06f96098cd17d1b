"""Row conversions between this toolkit's sets and the layouts other trainers read.

Each function maps plain rows (dicts in ``TRAJECTORY_SCHEMA`` / ``PAIR_SCHEMA``) to rows of the peer
format and, where a user would go back, the reverse; ``export.py`` does the files.

  trl_preference  pairs → ``{id, prompt, chosen, rejected}`` (TRL's standard preference rows: the
                  shared context as prompt, the two continuations after it)
  trl_sft         trajectories → ``{id, prompt, completion, observation_spans, prefill_spans}``: the
                  completion is the concatenated segments, ``observation_spans`` the ``[start, end)`` character
                  spans of the observations in it, so a trainer masks exactly the environment's text, and
                  ``prefill_spans`` those of the ``prefill`` segments (written by the toolkit, or a student's
                  prefix in an on-policy correction: context, never trained)
  trl_tools       trajectories → TRL's conversational tool-calling rows ``{id, messages, tools}``: the
                  prompt as the user turn; each step that ends in a call (search or any other tool) as an
                  assistant turn whose ``tool_calls`` holds the call (``arguments`` a JSON string, as the
                  OpenAI API sends it) and whose content is the step's text without the call markup; the
                  result as a ``role: tool`` message answering the call id with its plain text; the final
                  answer as the last assistant turn. ``tools`` is a JSON string (decode it before
                  ``apply_chat_template(tools=...)``): the declarations of the tools the row called
  llamafactory    AutoCoA's SFT layout: ``messages`` (sharegpt, observations inside the assistant turn,
                  masked by their ``--ignore_observation``) and, for pairs, ``conversation`` + ``chosen`` +
                  ``rejected`` with ``ranking: true``; plus the ``dataset_info.json`` entries
  llamafactory_tools  trajectories → LLaMA-Factory's function-call rows (``function_call`` / ``observation``
                  turns and a ``tools`` column), with their ``dataset_info.json`` entries
  verl            questions → ``{data_source, prompt [{role, content}], ability, reward_model {style: rule,
                  ground_truth}, extra_info {split, index, ...}}`` (Search-R1 / AutoCoA RL parquet); the export
                  writes verl's ``tool_config.yaml`` beside it (``data_cards.verl_tool``)
  questions       verl rows → FlashRAG question rows ``{id, question, golden_answers}``
"""

from __future__ import annotations

import json
import re
from typing import Iterable

from coa.formats import get_format, result_text
from coa.prompts import PromptConfig, user_message
from coa.tools import tool_class
from coa.trajectory import search_args

OBSERVATION, PREFILL = "observation", "prefill"
_THINK_TAGS = re.compile(r"</?think>")
SHAREGPT_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}


def _need(row: dict, columns: Iterable[str], where: str, index: int) -> None:
    missing = [c for c in columns if c not in row]
    if missing:
        raise ValueError(f"{where}: row {index} lacks column(s) {', '.join(missing)} (has: {', '.join(sorted(row))})")


# ---- TRL -------------------------------------------------------------------------------------
def trl_preference(pairs: list[dict], where: str = "pairs") -> list[dict]:
    out = []
    for i, p in enumerate(pairs):
        _need(p, ("id", "prompt", "chosen", "rejected"), where, i)
        out.append({"id": p["id"], "prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]})
    return out


def trl_sft(trajectories: list[dict], where: str = "trajectories") -> list[dict]:
    out = []
    for i, t in enumerate(trajectories):
        _need(t, ("id", "prompt", "segments"), where, i)
        completion, spans = "", {OBSERVATION: [], PREFILL: []}
        for s in t["segments"] or []:
            if s["kind"] in spans:
                spans[s["kind"]].append([len(completion), len(completion) + len(s["text"])])
            completion += s["text"]
        out.append(
            {
                "id": t["id"],
                "prompt": t["prompt"],
                "completion": completion,
                "observation_spans": spans[OBSERVATION],
                "prefill_spans": spans[PREFILL],
            }
        )
    return out


def trl_tools(trajectories: list[dict], where: str = "trajectories") -> list[dict]:
    out = []
    for i, t in enumerate(trajectories):
        _need(t, ("id", "prompt", "segments", "format"), where, i)
        fmt = get_format(t["format"])
        messages, called, step = [{"role": "user", "content": t["prompt"]}], [], ""
        for s in t["segments"] or []:
            if s["kind"] != OBSERVATION:
                step += s["text"]
                continue
            name = s.get("tool") or "search"
            call = {
                "id": f"call_{len(called)}",
                "type": "function",
                "function": {"name": name, "arguments": s.get("args") or search_args(s.get("query") or "")},
            }
            reasoning = "".join(x.text for x in fmt.parse(step).steps if x.kind not in ("search", "call"))
            messages += [
                {"role": "assistant", "content": reasoning, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call["id"], "name": name, "content": result_text(s["text"], fmt)},
            ]
            called.append(name)
            step = ""
        messages.append({"role": "assistant", "content": step})
        tools = [tool_class(name).schema() for name in dict.fromkeys(called)]
        out.append({"id": t["id"], "messages": messages, "tools": json.dumps(tools, ensure_ascii=False)})
    return out


def sft_segments(row: dict) -> list[dict]:
    """The reverse of ``trl_sft`` for one row: the completion cut back into model / observation / prefill segments
    (a row without ``prefill_spans``, as earlier exports wrote, has none)."""
    text, segs, at = row["completion"], [], 0
    spans = sorted(
        [(start, end, OBSERVATION) for start, end in row["observation_spans"]]
        + [(start, end, PREFILL) for start, end in row.get("prefill_spans") or []]
    )
    for start, end, kind in spans:
        if start < at or end > len(text) or end < start:
            raise ValueError(
                f"row {row.get('id')}: {kind} span [{start}, {end}) is out of order, overlaps another or is outside "
                f"the completion ({len(text)} chars)"
            )
        if start > at:
            segs.append({"kind": "model", "text": text[at:start]})
        segs.append({"kind": kind, "text": text[start:end]})
        at = end
    if at < len(text):
        segs.append({"kind": "model", "text": text[at:]})
    return segs


# ---- LLaMA-Factory (AutoCoA's SFT fork) ------------------------------------------------------
def llamafactory_messages(trajectories: list[dict], where: str = "trajectories") -> list[dict]:
    """One user turn (the prompt as the teacher saw it) and one assistant turn holding the whole completion,
    observations included, as AutoCoA's ``chain_of_action`` data does."""
    return [
        {
            "id": r["id"],
            "messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}],
        }
        for r in trl_sft(trajectories, where)
    ]


def llamafactory_ranking(pairs: list[dict], where: str = "pairs") -> list[dict]:
    """AutoCoA's ``partial_preference_coa``: the shared context as the conversation, the two continuations."""
    return [
        {
            "id": p["id"],
            "conversation": [{"role": "user", "content": p["prompt"]}],
            "chosen": {"role": "assistant", "content": p["chosen"]},
            "rejected": {"role": "assistant", "content": p["rejected"]},
        }
        for p in trl_preference(pairs, where)
    ]


def llamafactory_tools(trajectories: list[dict], where: str = "trajectories") -> list[dict]:
    """LLaMA-Factory's function-call layout (sharegpt ``messages`` + ``tools``), from the same turns as
    ``trl_tools``: each call as a ``function_call`` turn, its reasoning before the call JSON in think tags (what
    LLaMA-Factory's function formatter splits off as the thought), each result as an ``observation`` turn, the
    final answer as the last ``assistant`` turn."""
    out = []
    for row in trl_tools(trajectories, where):
        messages = []
        for m in row["messages"]:
            if m["role"] == "tool":
                messages.append({"role": OBSERVATION, "content": m["content"]})
            elif m.get("tool_calls"):
                fn = m["tool_calls"][0]["function"]
                call = json.dumps({"name": fn["name"], "arguments": json.loads(fn["arguments"])}, ensure_ascii=False)
                thought = _THINK_TAGS.sub("", m["content"]).strip()
                messages.append(
                    {"role": "function_call", "content": f"<think>\n{thought}\n</think>\n\n{call}" if thought else call}
                )
            else:
                messages.append({"role": m["role"], "content": m["content"]})
        out.append({"id": row["id"], "messages": messages, "tools": row["tools"]})
    return out


def llamafactory_dataset_info(files: dict[str, str]) -> dict:
    """``dataset_info.json`` entries: name → file; ``pairs`` is a ranking set, the others sharegpt SFT (``tools_*``
    with their function-call and observation turns and the ``tools`` column)."""
    info = {}
    for name, file in files.items():
        if name == "pairs":
            info[f"autocoa_{name}"] = {
                "file_name": file,
                "formatting": "sharegpt",
                "ranking": True,
                "columns": {"messages": "conversation", "chosen": "chosen", "rejected": "rejected"},
                "tags": SHAREGPT_TAGS,
            }
        else:
            tools = name.startswith("tools_")
            info[f"autocoa_{name}"] = {
                "file_name": file,
                "formatting": "sharegpt",
                "columns": {"messages": "messages", **({"tools": "tools"} if tools else {})},
                "tags": SHAREGPT_TAGS
                | ({"function_tag": "function_call", "observation_tag": OBSERVATION} if tools else {}),
            }
    return info


# ---- verl RL parquet and back ----------------------------------------------------------------
def verl_rows(
    questions: list[dict], prompt: PromptConfig, split: str, ability: str = "fact-reasoning", where: str = "questions"
) -> list[dict]:
    """Search-R1 / AutoCoA RL rows. ``ground_truth`` is ``{"target": [aliases]}`` (Search-R1's reward reads
    every alias); ``extra_info`` keeps the question id, text and aliases so the reverse is exact."""
    rows = []
    for i, q in enumerate(questions):
        _need(q, ("id", "question", "golden_answers"), where, i)
        rows.append(
            {
                "data_source": q.get("dataset") or "unknown",
                "prompt": [{"role": "user", "content": user_message(q["question"], prompt)}],
                "ability": ability,
                "reward_model": {"style": "rule", "ground_truth": {"target": list(q["golden_answers"])}},
                "extra_info": {
                    "split": split,
                    "index": i,
                    "id": q["id"],
                    "question": q["question"],
                    "golden_answers": list(q["golden_answers"]),
                },
            }
        )
    return rows


def _question_from_prompt(content: str) -> str:
    """The question at the end of an instruction (AutoCoA and Search-R1 put it last, after a cue line)."""
    for cue in ("question below:", "Question:"):
        head, sep, tail = content.rpartition(cue)
        if sep and tail.strip():
            return tail.strip()
    lines = [line for line in content.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _golds(ground_truth) -> list[str]:
    if isinstance(ground_truth, dict):  # Search-R1: {"target": [...]}
        target = ground_truth.get("target")
        return [target] if isinstance(target, str) else list(target or [])
    if isinstance(ground_truth, str):
        try:  # some writers store the alias list as JSON text
            parsed = json.loads(ground_truth)
            if isinstance(parsed, list):
                return [str(x) for x in parsed]
        except ValueError:
            pass
        return [ground_truth]
    return [str(g) for g in ground_truth or []]


def verl_to_questions(rows: list[dict], where: str = "verl parquet") -> list[dict]:
    """FlashRAG question rows from verl RL rows: id / question / aliases from ``extra_info`` when present
    (this exporter's rows), else ``_id`` / the prompt's last user turn / ``reward_model.ground_truth``."""
    out = []
    for i, r in enumerate(rows):
        _need(r, ("prompt", "reward_model"), where, i)
        extra = r.get("extra_info") or {}
        user = [m["content"] for m in r["prompt"] or [] if m.get("role") == "user"]
        question = extra.get("question") or (_question_from_prompt(user[-1]) if user else "")
        if not question:
            raise ValueError(f"{where}: row {i} has no user turn in 'prompt' and no extra_info.question")
        golds = extra.get("golden_answers") or _golds((r["reward_model"] or {}).get("ground_truth"))
        qid = extra.get("id") or r.get("_id") or f"{extra.get('split', 'train')}_{extra.get('index', i)}"
        out.append(
            {"id": str(qid), "question": question, "golden_answers": list(golds), "dataset": r.get("data_source") or ""}
        )
    return out
