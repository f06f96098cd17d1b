"""synth stage: a teacher writes CoT and CoA trajectories (and branches) with real search.

    python -m synth.serve                 # the embedded teacher (vLLM CPU, SmolLM2-135M-Instruct)
    python -m synth.run mode=coa limit=20 # trajectories → runs/synth/coa (parquet shards + summary.json)

Modules: ``serve`` (start/reuse/stop the engine), ``teacher`` (OpenAI-compatible completions with
retries), ``jobs`` (what to generate, keyed like the rows), ``synthesize`` (jobs through
``coa.agent.run_episode``, many in flight, batched search), ``shards`` (append-only, resumable
output), ``summary``, ``run`` (CLI, ``run(cfg)``, ``branch(decision_rows, cfg)``).
"""
