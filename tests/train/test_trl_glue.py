"""What train/ relies on in TRL, checked against the installed TRL so an upgrade fails here, by name."""

from __future__ import annotations

import inspect

import pytest

import trl
from trl import GRPOTrainer

from train.config import GRPO_LOSS_TYPES, GRPO_REWARD_SCALES


def test_every_loss_type_we_accept_is_one_trl_implements():
    source = inspect.getsource(GRPOTrainer)
    missing = [t for t in GRPO_LOSS_TYPES if f'"{t}"' not in source]
    assert not missing, f"TRL {trl.__version__} GRPOTrainer does not implement loss_type {missing}"


def test_every_reward_scale_we_accept_is_one_trl_implements():
    source = inspect.getsource(GRPOTrainer)
    missing = [s for s in GRPO_REWARD_SCALES if f'"{s}"' not in source]
    assert not missing, f"TRL {trl.__version__} GRPOTrainer does not implement scale_rewards {missing}"


# ---- the version guard --------------------------------------------------------------------------------------


def test_the_installed_trl_is_a_supported_one():
    from packaging.specifiers import SpecifierSet

    from train.trl_glue import TRL_SUPPORTED

    assert trl.__version__ in SpecifierSet(TRL_SUPPORTED), f"TRL {trl.__version__} is outside {TRL_SUPPORTED}"


def test_another_trl_stops_with_one_line_naming_both_versions(monkeypatch):
    from train.trl_glue import check_trl_version

    monkeypatch.delenv("COA_ALLOW_TRL", raising=False)
    with pytest.raises(
        RuntimeError,
        match=r"train/ needs trl>=1\.16,<1\.17 \(it patches TRL internals: "
        r"train/trl_glue\.py\), but trl 1\.17\.0 is installed: pip install "
        r"'trl>=1\.16,<1\.17', or set COA_ALLOW_TRL=1",
    ):
        check_trl_version("1.17.0")
    with pytest.raises(RuntimeError, match="but trl 1.15.2 is installed"):
        check_trl_version("1.15.2")
    check_trl_version("1.16.3")  # a patch release of the tested minor passes
    monkeypatch.setenv("COA_ALLOW_TRL", "1")
    check_trl_version("1.17.0")  # the escape hatch


# ---- one test per patch: the TRL symbol and the layout it relies on ------------------------------------------


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_chunked_logprob_token_chunk_size_is_a_module_int():
    """``tile_lm_head_for_cpu`` sets ``trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE``; the kernel must read it."""
    from trl.kernels import chunked_logprob

    assert isinstance(getattr(chunked_logprob, "TOKEN_CHUNK_SIZE", None), int), (
        "trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE is gone (train.trl_glue.tile_lm_head_for_cpu sets it)"
    )
    assert "TOKEN_CHUNK_SIZE" in inspect.getsource(chunked_logprob).split("TOKEN_CHUNK_SIZE =", 1)[1], (
        "trl.kernels.chunked_logprob no longer reads TOKEN_CHUNK_SIZE"
    )


def test_grpo_get_per_token_logps_and_entropies_signature_and_result():
    """``TrimmingGRPOTrainer`` overrides it and calls it positionally, and returns its 3-tuple."""
    fn = GRPOTrainer._get_per_token_logps_and_entropies
    assert _params(fn)[:8] == [
        "self",
        "model",
        "input_ids",
        "attention_mask",
        "logits_to_keep",
        "batch_size",
        "compute_entropy",
        "compute_aux_loss",
    ], f"GRPOTrainer._get_per_token_logps_and_entropies{inspect.signature(fn)} changed"
    assert "return logps, entropies, aux_loss" in inspect.getsource(fn), (
        "GRPOTrainer._get_per_token_logps_and_entropies no longer returns (logps, entropies, aux_loss)"
    )
    # every extra parameter is multimodal and defaults to None (the override passes them on as **multimodal)
    extra = list(inspect.signature(fn).parameters.values())[8:]
    assert all(p.default is None for p in extra), f"new non-multimodal parameters: {[p.name for p in extra]}"


def test_grpo_log_metric_and_metrics_lists():
    """``log_metric`` calls ``GRPOTrainer._log_metric(name, value)``; ``add_step_metric`` appends to
    ``_metrics["train"][name]`` (a defaultdict(list)) that ``log`` averages."""
    assert _params(GRPOTrainer._log_metric) == ["self", "name", "value"], (
        f"GRPOTrainer._log_metric{inspect.signature(GRPOTrainer._log_metric)} changed"
    )
    init = inspect.getsource(GRPOTrainer.__init__)
    assert 'self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}' in init, (
        "GRPOTrainer._metrics is no longer {'train': defaultdict(list), ...}"
    )
    assert "self._metrics[mode]" in inspect.getsource(GRPOTrainer.log), "GRPOTrainer.log no longer reads _metrics"


def test_cpo_concatenated_forward_tuple_layout():
    """``PaperCPOTrainer`` replaces the tuple's nll_loss by position (``NLL_LOSS``)."""
    from trl.experimental.cpo import CPOTrainer

    from train.trl_glue import NLL_LOSS

    source = inspect.getsource(CPOTrainer.concatenated_forward)
    layout = "(chosen_logps, rejected_logps, chosen_logits, rejected_logits, nll_loss"
    assert f"return {layout})" in source and f"return {layout}, outputs.aux_loss)" in source, (
        "CPOTrainer.concatenated_forward no longer returns (chosen_logps, ..., nll_loss[, aux_loss])"
    )
    assert layout.strip("(").split(", ").index("nll_loss") == NLL_LOSS
    assert _params(CPOTrainer.concatenated_forward) == ["self", "model", "batch"]


def test_cpo_tokenize_row_signature():
    from trl.experimental.cpo import CPOTrainer

    assert _params(CPOTrainer.tokenize_row) == ["self", "feature", "model"], (
        f"CPOTrainer.tokenize_row{inspect.signature(CPOTrainer.tokenize_row)} changed"
    )


def test_dpo_prepare_dataset_and_precompute_ref_logps():
    from trl import DPOTrainer

    assert _params(DPOTrainer._prepare_dataset) == ["self", "dataset", "processing_class", "args", "dataset_name"], (
        f"DPOTrainer._prepare_dataset{inspect.signature(DPOTrainer._prepare_dataset)} changed"
    )
    assert "self.precompute_ref_logps" in inspect.getsource(DPOTrainer.__init__), (
        "DPOTrainer no longer sets precompute_ref_logps (PretokenizedDPOTrainer counts the reference's pass by it)"
    )
    assert _params(DPOTrainer.compute_loss)[:5] == ["self", "model", "inputs", "return_outputs", "num_items_in_batch"]


def test_unwrap_model_for_generation_keywords():
    from trl.models import unwrap_model_for_generation

    params = _params(unwrap_model_for_generation)
    assert params[:2] == ["model", "accelerator"] and {"generation_kwargs", "gradient_checkpointing_kwargs"} <= set(
        params
    ), f"trl.models.unwrap_model_for_generation{inspect.signature(unwrap_model_for_generation)} changed"


def test_grpo_rollout_func_contract():
    """``train.rollout`` is a ``rollout_func(prompts, trainer)`` returning prompt_ids, completion_ids, logprobs and
    env_mask (extra keys reach the reward functions)."""
    init, source = inspect.signature(GRPOTrainer.__init__), inspect.getsource(GRPOTrainer)
    assert "rollout_func" in init.parameters, "GRPOTrainer(rollout_func=...) is gone"
    assert "self.rollout_func(" in source, "GRPOTrainer no longer calls rollout_func"
    for key in ("prompt_ids", "completion_ids", "logprobs", "env_mask"):
        assert f'"{key}"' in source, f"GRPOTrainer no longer reads the rollout_func output key {key!r}"


def test_grpo_calculate_rewards_and_loss_scaling():
    """``TeacherGuidedGRPOTrainer`` overrides ``_calculate_rewards(inputs, prompts, completions, completion_ids_list)``
    (called with the batch's rows, returning every process's rewards gathered) and adds its term to the loss of one
    micro-batch: GRPOTrainer's loss must already be divided by the accumulation steps and backpropagated as returned."""
    fn = GRPOTrainer._calculate_rewards
    assert _params(fn) == ["self", "inputs", "prompts", "completions", "completion_ids_list"], (
        f"GRPOTrainer._calculate_rewards{inspect.signature(fn)} changed"
    )
    assert "rewards_per_func = gather(rewards_per_func)" in inspect.getsource(fn), (
        "GRPOTrainer._calculate_rewards no longer returns the rewards of every process"
    )
    assert "self._calculate_rewards(inputs, prompts, completions, completion_ids_list)" in inspect.getsource(
        GRPOTrainer._generate_and_score_completions
    ), "GRPOTrainer no longer scores the batch's rows through _calculate_rewards"
    assert GRPOTrainer.loss_is_scaled_for_ga is True, (
        "GRPOTrainer.loss_is_scaled_for_ga changed: the Trainer would divide the teacher term by the accumulation steps"
    )
    assert _params(GRPOTrainer.compute_loss) == ["self", "model", "inputs", "return_outputs", "num_items_in_batch"]
