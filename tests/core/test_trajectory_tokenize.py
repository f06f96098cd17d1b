import pyarrow.parquet as pq
import pytest

from coa.formats import AUTOCOA
from coa.prompts import PromptConfig, render_prompt
from coa.search.types import Doc
from coa.tokenize import MODEL, OBSERVATION, PROMPT, tokenize_segments
from coa.trajectory import TRAJECTORY_SCHEMA, Trajectory, read_trajectories, segment, write_trajectories

DOCS = [Doc("hp8", '"Maria Golovin"\nMaria Golovin is an English language opera by Gian Carlo Menotti.')]


def make(tokenizer) -> Trajectory:
    prompt = render_prompt(tokenizer, "Who wrote Maria Golovin?", PromptConfig(format="autocoa", demonstrations=True))
    obs = AUTOCOA.observation(DOCS)
    segs = [
        segment("model", "<think>\nLet me search. <begin_search> Maria Golovin </end_search>"),
        segment("observation", obs, query="Maria Golovin", doc_ids=["hp8"]),
        segment("model", "It is Menotti.\n</think>\n\\boxed{Gian Carlo Menotti}"),
    ]
    return Trajectory(
        question_id="q1",
        question="Who wrote Maria Golovin?",
        golden_answers=["Gian Carlo Menotti"],
        prompt=prompt,
        segments=segs,
        n_actions=1,
        finish_reason="answer",
    )


def test_parquet_round_trip(tmp_path, tokenizer):
    t = make(tokenizer)
    path = write_trajectories(tmp_path / "t.parquet", [t])
    assert pq.read_schema(path).names == TRAJECTORY_SCHEMA.names
    back = read_trajectories(path)[0]
    assert back.segments == t.segments and back.id == t.id and back.text == t.text
    assert back.parse().well_formed and back.parse().answer == "Gian Carlo Menotti"


def test_missing_column_error(tmp_path):
    import pyarrow as pa

    pq.write_table(pa.table({"id": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad.parquet: missing trajectory columns \['question_id'"):
        read_trajectories(tmp_path / "bad.parquet")


def test_segments_decode_exactly(tokenizer):
    t = make(tokenizer)
    tok = tokenize_segments(tokenizer, t.prompt, t.segments, eos=True)
    assert len(tok.input_ids) == len(tok.segment_labels) == len(tok.segment_index)

    def by_label(wanted):
        return [i for i, label in zip(tok.input_ids, tok.segment_labels) if label == wanted]

    assert tokenizer.decode(by_label(PROMPT)) == t.prompt
    assert tokenizer.decode(by_label(OBSERVATION)) == t.segments[1]["text"]
    assert tokenizer.decode(by_label(MODEL)) == t.segments[0]["text"] + t.segments[2]["text"] + "<|im_end|>"
    assert tok.input_ids[-1] == tokenizer.eos_token_id
    labels = tok.labels(observation_loss=False)
    trained = [i for i in labels if i != -100]
    assert tokenizer.decode(trained) == tokenizer.decode(by_label(MODEL))
    assert len([i for i in tok.labels(observation_loss=True) if i != -100]) == len(by_label(MODEL)) + len(
        by_label(OBSERVATION)
    )
