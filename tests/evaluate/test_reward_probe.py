"""The RL reward probe end to end on the real index and the stage's own reward functions, with a scripted
engine per checkpoint (``before`` answers wrong, ``after`` right after searching), and the check it feeds."""

from __future__ import annotations

import json

from coa.agent import Generation
from coa.config import build
from coa.questions import DEFAULT_QUESTIONS, load_questions
from evaluate.checks import check_reward_moved
from evaluate.reward_probe import RewardProbeConfig, probe
from train import pool as policy_module  # where the probe looks its policies up


class AnsweringEngine:
    """Fake engine (no model can be made to answer on cue): searches the question once, then answers gold
    (``right``) or a wrong name. Records each request's question, seed and searches done."""

    name = "answering"

    def __init__(self, tokenizer, right: bool):
        self.tok, self.right, self.requests = tokenizer, right, []

    async def generate(self, request):
        ep = request.episode
        self.requests.append((ep.question["id"], request.seed, ep.n_actions))
        if ep.n_actions == 0:
            text = f"<search>{ep.question['question']}</search>"
        else:
            answer = ep.question["golden_answers"][0] if self.right else "Nobody In Particular"
            text = f"</think>\n<answer>{answer}</answer>"
        return Generation(text, "stop", token_ids=self.tok.encode(text, add_special_tokens=False), eos=True)

    async def close(self):
        pass


def test_the_probe_measures_the_reward_difference_on_fixed_questions(tmp_path, index_dir, tokenizer, monkeypatch):
    engines = {"before": AnsweringEngine(tokenizer, right=False), "after": AnsweringEngine(tokenizer, right=True)}
    monkeypatch.setattr(policy_module, "load_policy", lambda model, *a: (engines[model], tokenizer))
    cfg = build(
        RewardProbeConfig,
        {
            "stage": "rl2",
            "before": "before",
            "after": "after",
            "limit": 3,
            "samples": 2,
            "questions": str(DEFAULT_QUESTIONS),
            "index": str(index_dir),
            "out": str(tmp_path / "probe"),
        },
        "test",
    )
    got = probe(cfg)
    assert got["tools"] == "real" and got["n_questions"] == 3 and got["samples"] == 2
    # the same questions and seeds for both checkpoints: paired
    ids = [q["id"] for q in load_questions(DEFAULT_QUESTIONS, limit=3)]
    for engine in engines.values():
        first_calls = [(qid, seed) for qid, seed, searched in engine.requests if not searched]
        assert first_calls == [(i, 1234 + 1000 * k) for k, i in enumerate(i for i in ids for _ in range(2))]
    before, after = got["models"]["before"], got["models"]["after"]
    assert before["correctness"] == 0.0 and after["correctness"] == 1.0 and after["well_formed"] == 1.0
    assert before["search_calls"] == after["search_calls"] == 1.0  # the real environment answered each call
    assert got["difference"]["diff"] == after["reward"] - before["reward"] > 0 and got["difference"]["n"] == 3
    assert got["difference"]["ci95"][0] > 0
    rows = (tmp_path / "probe" / "rollouts.jsonl").read_text().splitlines()
    assert len(rows) == 12 and json.loads(rows[0])["model"] == "before"
    assert check_reward_moved("rl2", got)["status"] == "pass"


def test_reward_check_passes_warns_and_fails_on_the_interval():
    def probe_result(lo, hi):
        return {
            "models": {"before": {"reward": 0.2}, "after": {"reward": 0.2 + (lo + hi) / 2}},
            "difference": {"diff": (lo + hi) / 2, "ci95": [lo, hi], "n": 16},
        }

    assert check_reward_moved("rl2", probe_result(0.01, 0.2))["status"] == "pass"
    assert check_reward_moved("rl2", probe_result(-0.1, 0.2))["status"] == "warn"
    failed = check_reward_moved("rl1", probe_result(-0.3, -0.05))
    assert failed["status"] == "fail" and failed["numbers"]["ci95"] == [-0.3, -0.05]


def test_a_stage_trained_on_its_first_questions_is_probed_on_those(tmp_path, index_dir, tokenizer, monkeypatch):
    """rl2 with ``question_limit: 2`` trained on its pool's first 2 questions: a probe of 5 probes those 2."""
    import yaml

    import coa.config

    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "search": {"index": str(index_dir)},
                "train": {"rl2": {"questions": str(DEFAULT_QUESTIONS), "question_limit": 2}},
            }
        )
    )
    monkeypatch.setattr(coa.config, "PARAMS_FILE", str(params))
    engines = {"before": AnsweringEngine(tokenizer, right=False), "after": AnsweringEngine(tokenizer, right=True)}
    monkeypatch.setattr(policy_module, "load_policy", lambda model, *a: (engines[model], tokenizer))
    cfg = build(
        RewardProbeConfig,
        {
            "stage": "rl2",
            "before": "before",
            "after": "after",
            "limit": 5,
            "samples": 1,
            "out": str(tmp_path / "probe"),
        },
        "test",
    )
    got = probe(cfg)
    assert got["n_questions"] == 2
    assert {qid for qid, _, _ in engines["after"].requests} == {
        q["id"] for q in load_questions(DEFAULT_QUESTIONS, limit=2)
    }
