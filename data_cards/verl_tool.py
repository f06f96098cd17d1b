"""One of this toolkit's tools as a verl multi-turn tool, so verl's rollouts call the same ``search``, ``open`` and
``python`` as synthesis, RL and evaluation do here.

``python -m data_cards.export to=verl`` writes ``tool_config.yaml`` beside the RL parquet, one entry per enabled
tool (``search.tools``): ``class_name: data_cards.verl_tool.VerlTool``, a ``config`` naming the tool and the
environment it runs in (``index``, ``topk``, ``snippet_tokens``, the format preset and the tool's own settings,
as ``params.yaml``'s ``search`` section holds them), and the tool's JSON schema. verl reads it with
``actor_rollout_ref.rollout.multi_turn.tool_config_path=runs/export/verl/tool_config.yaml`` (the toolkit importable
in verl's workers; a relative ``index`` is read from verl's working directory).

The contract is verl's ``verl.tools.base_tool.BaseTool`` (all methods async): ``create(instance_id) -> id``,
``execute(instance_id, parameters) -> (response, reward, metrics)`` with the response ``{"text": ...}``,
``calc_reward(instance_id) -> float`` and ``release(instance_id)``. verl is not a dependency of this toolkit and
is not installed here, so the class follows that contract without subclassing ``BaseTool``;
``tests/data_cards/test_verl_tool.py`` drives it through the contract against the real index. Calls are checked
and budgeted per trajectory (``instance_id``) as the agent loop does, each tool counting its own calls against
``max_actions`` and ``max_calls`` (verl caps the turns of all tools together: ``multi_turn.max_assistant_turns``):
a refused call returns the message the policy would read, its error in the metrics.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import asdict, is_dataclass
from typing import Any
from uuid import uuid4

from coa.config import build
from coa.environment import SearchEnvConfig
from coa.formats import FORMAT, get_format
from coa.tools import tool_class

# the config keys that are the search environment's (params.yaml's search section)
ENV_KEYS = ("index", "retriever", "backend", "topk", "snippet_tokens", "max_actions", "max_calls", "open", "python")
TOOL_SETTINGS = ("open", "python")  # a tool's own settings: in its entry only


def tool_config(env: SearchEnvConfig, fmt: str = FORMAT) -> dict:
    """verl's tool config (``tool_config.yaml``): one entry per enabled tool, this class over it."""
    section = {k: getattr(env, k) for k in ENV_KEYS}
    entries = []
    for name in env.tools:
        config = {"type": "native", "tool": name, "format": fmt}
        config |= {k: section[k] for k in ENV_KEYS if k not in TOOL_SETTINGS}
        if name in TOOL_SETTINGS:
            config[name] = _plain(section[name])
        entries.append(
            {"class_name": f"{__name__}.VerlTool", "config": config, "tool_schema": tool_class(name).schema()}
        )
    return {"tools": entries}


def _plain(settings: Any) -> dict:
    return asdict(settings) if is_dataclass(settings) else dict(settings or {})


class VerlTool:
    """A verl tool (``BaseTool``'s contract, the module docstring) running one toolkit tool."""

    def __init__(self, config: dict, tool_schema: Any = None):
        self.config = dict(config)
        self.name = self.config["tool"]
        values = {k: self.config[k] for k in ENV_KEYS if k in self.config} | {"tools": [self.name]}
        env = build(SearchEnvConfig, values, f"verl tool config ({self.name})")
        self.box = env.toolbox(get_format(self.config.get("format") or FORMAT))
        self.tool_schema = tool_schema if tool_schema is not None else tool_class(self.name).schema()
        self.used: dict[str, Counter] = {}  # calls so far per trajectory

    def get_openai_tool_schema(self) -> Any:
        return self.tool_schema

    async def create(self, instance_id: str | None = None, **kwargs) -> str:
        instance_id = instance_id or str(uuid4())
        self.used[instance_id] = Counter()
        return instance_id

    async def execute(self, instance_id: str, parameters: dict | str, **kwargs) -> tuple[dict, float, dict]:
        used = self.used.setdefault(instance_id, Counter())
        result = await asyncio.to_thread(self.box.call, self.name, parameters, used)
        return {"text": result.text}, 0.0, {"error": result.error, **result.provenance}

    async def calc_reward(self, instance_id: str, **kwargs) -> float:
        return 0.0  # the reward is the trajectory's (verl's reward function), not a tool's

    async def release(self, instance_id: str, **kwargs) -> None:
        self.used.pop(instance_id, None)
