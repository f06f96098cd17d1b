"""New multi-hop questions from seed questions and a corpus, verified: ``python -m synth.questions``.

A proposer writes candidates, the verifiers keep or drop each with a named reason, and the kept ones are
written as a FlashRAG question file that ``synth.run`` and the reference teacher take like any other:

    record.py    the one record type (``Candidate``), the corpus (the index's document store), the seeds
                 and their decompositions
    compose.py   ``proposer=compose``: templated compositions and comparisons of seed questions, no LLM
    llm.py       ``proposer=extend`` / ``obfuscate``: an LLM writes them, through the engine seam
    verify.py    supported, needs_every_hop, unique, clean, solvable, no_memory_shortcut
    config.py    ``QuestionsConfig`` (``params.yaml`` section ``questions``)
    __main__.py  the entry point: propose, verify, write ``questions.jsonl``, ``metrics.json``, the plot

Each question's ``metadata``: ``evidence_ids`` (corpus ids; also ``gold_paragraph_ids``, which the reference
teacher's memory reads), ``hops``, ``question_decomposition`` (``{question, answer, evidence_id}`` per hop,
``#k`` = step k's answer), ``type`` (composition | comparison | bridge), ``difficulty`` (1 - the reference
teacher's pass rate over ``verify.solver_topk``), ``solver``, ``verification`` (each verifier's pass/fail or
skip and its reason), ``components`` and ``seed_ids`` (what it was built from: a split that keeps questions
sharing a seed together needs them), and provenance: ``generator``, ``prompt_hash``, ``seed`` (``template``
and ``templated`` for compose, ``teacher`` for an LLM).
"""
