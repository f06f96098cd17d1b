"""Publish the curated sets to the Hugging Face Hub (or any server speaking its API) with a card
generated from the run.

    HF_TOKEN=hf_... python -m data_cards.publish repo_id=ORG/NAME [private=true] [revision=BRANCH]
    python -m data_cards.publish repo_id=ORG/NAME dest=DIR          # air-gapped copy, same layout, no upload
    HF_ENDPOINT=http://host:port python -m data_cards.publish ...   # another Hub-compatible server

``dest`` must be a new or empty folder, or one an earlier ``dest=`` publish wrote (its ``.autocoa-owner.json``
lists the files it wrote: only those are replaced or deleted); ``overwrite=true`` writes into another
folder, replacing files of the same name and deleting nothing else. Files are staged first and placed
only once all of them are written. Exit codes: 0 done, 1 an upload that failed part-way (nothing was
committed; re-run), 2 bad settings, input or environment (one line; ``COA_DEBUG=1`` for a traceback).
An endpoint that answers an error is named with its status and the request (a refused token only on 401/403);
one that does not answer within ``timeout_s`` seconds (per request) is named too, never waited for forever.

Layout (what the Hub repo and ``dest`` hold): ``README.md`` (the card), ``{config}/train-0000i-of-0000n.parquet``
for the configs ``pairs``, ``coa``, ``cot`` (``sets=``: an on-policy round's folder publishes ``pairs`` and
``corrections``; and ``trajectories``, all scored rows, with ``trajectories=true``), and ``plots/*.png`` from the
analyze step. Empty sets are left out and the card says so. Upload is one commit through
``huggingface_hub.HfApi.create_commit`` (the card included: not ``DatasetCard.push_to_hub``, which validates at
the public Hub whatever ``HF_ENDPOINT`` says). Shards and card are byte-identical for unchanged data, so the Hub
reports every file unchanged and a second publish adds no commit. An upload cut in the middle commits nothing;
re-running finishes it, and LFS objects that already arrived are not sent again. The token comes from ``HF_TOKEN``
and is never printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from coa import paths
from coa.config import cli
from coa.errors import BadInput, entry_point, one_line
from coa.io import atomic_output, claim_folder, record_folder
from data_cards import card, run_facts

MANAGED = ("pairs/", "coa/", "cot/", "trajectories/", "plots/")  # folders a publish owns in the repo


class PublishError(RuntimeError):
    """An upload that failed part-way (nothing committed); the message says what happened and what to do."""


@dataclass
class PublishConfig:
    """Settings of ``python -m data_cards.publish`` (``key=value``; ``--help``, ``--print-config``).

    Target: repo_id, private, revision, dest. Inputs: sets_dir, curate_dir, index, questions_dir, params_file, dvc_lock,
    trajectories. Card: pretty_name, licenses. Files: max_shard_bytes, commit_message.
    """

    repo_id: str = field(
        default="", metadata={"help": "Hub dataset repo ORG/NAME (also named in the card's loading code)"}
    )
    private: bool = field(
        default=False, metadata={"help": "create the repo private (an existing repo keeps its visibility)"}
    )
    revision: str = field(default="main", metadata={"help": "branch to commit to; created from main if missing"})
    dest: str = field(default="", metadata={"help": "write the repo's files to this folder instead of uploading"})
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "let dest= be a non-empty folder publish did not write (same-name files replaced, nothing deleted)"
        },
    )
    sets_dir: str = field(
        default=paths.curate("sets"), metadata={"help": "the sets step's folder (pairs/coa/cot.parquet, metrics.json)"}
    )
    sets: list = field(
        default_factory=lambda: list(run_facts.SETS),
        metadata={"help": "the sets in sets_dir to publish; an on-policy round's folder: sets=[pairs,corrections]"},
    )
    curate_dir: str = field(
        default=paths.CURATE, metadata={"help": "curate steps' parent folder (score/analyze/pairs metrics, plots)"}
    )
    index: str = field(default=paths.INDEX, metadata={"help": "search index folder (its index.json names the corpus)"})
    questions_dir: str = field(
        default=paths.QUESTIONS,
        metadata={"help": "synth.questions outputs, one folder per question set (their metrics.json: the card)"},
    )
    params_file: str = field(default="params.yaml", metadata={"help": "params file quoted in the card's provenance"})
    dvc_lock: str = field(
        default="dvc.lock", metadata={"help": "dvc.lock whose hashes the card checks the sets against"}
    )
    trajectories: bool = field(
        default=False, metadata={"help": "also publish every scored trajectory as config 'trajectories'"}
    )
    pretty_name: str = field(
        default="AutoCoA search-agent training sets", metadata={"help": "card title and pretty_name"}
    )
    licenses: dict = field(
        default_factory=dict,
        metadata={
            "help": "licence per source dataset name, added to the built-in ones (e.g. licenses.musique=cc-by-4.0)"
        },
    )
    max_shard_bytes: int = field(default=500_000_000, metadata={"help": "largest in-memory size of one parquet shard"})
    commit_message: str = field(
        default="", metadata={"help": "commit title; empty = one naming the sets and row counts"}
    )
    timeout_s: float = field(
        default=60.0,
        metadata={
            "help": "seconds to wait for the Hub's answer to each request (connect, each read or write); then stop"
        },
    )

    def __post_init__(self) -> None:
        if self.repo_id.count("/") != 1 or not all(self.repo_id.split("/")):
            raise ValueError(f"repo_id must be ORG/NAME, got {self.repo_id!r}; e.g. repo_id=my-org/autocoa-sets")
        self.sets = list(run_facts.set_names(self.sets))
        if self.max_shard_bytes < 1:
            raise ValueError(f"max_shard_bytes must be >= 1, got {self.max_shard_bytes}")
        if not isinstance(self.licenses, dict):
            raise ValueError(f"licenses must be a mapping dataset → licence id, got {self.licenses!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 (seconds), got {self.timeout_s}")


def write_shards(table, folder: Path, name: str, max_bytes: int) -> list[Path]:
    """``{name}/train-0000i-of-0000n.parquet`` (the ``datasets.push_to_hub`` naming), rows split evenly."""
    n = max(1, min(table.num_rows, -(-table.nbytes // max_bytes)))
    per = -(-table.num_rows // n)
    n = -(-table.num_rows // per)  # no empty trailing shard (datasets cannot read a zero-row shard)
    (folder / name).mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / name / f"train-{i:05d}-of-{n:05d}.parquet"
        pq.write_table(table.slice(i * per, per), path)
        paths.append(path)
    return paths


def stage(cfg: PublishConfig, folder: Path) -> tuple[list[Path], dict[str, int]]:
    """Write the repo's files into ``folder``; returns them and the rows per published config."""
    facts = run_facts.collect(cfg)
    files, counts = [], {}
    for name, table in facts.sets.items():
        if table.num_rows:
            files += write_shards(table, folder, name, cfg.max_shard_bytes)
            counts[name] = table.num_rows
    for plot in facts.plots:
        (folder / "plots").mkdir(exist_ok=True)
        files.append(Path(shutil.copyfile(plot, folder / "plots" / plot.name)))
    readme = folder / "README.md"
    readme.write_text(card.render(facts, cfg.repo_id, cfg.pretty_name))
    return [readme, *files], counts


def push(cfg: PublishConfig, folder: Path, files: list[Path], message: str) -> tuple[str, bool]:
    """One commit of ``files`` (plus deletions of stale files in the folders a publish owns).
    Returns the head commit and whether a commit was made."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_session
    from huggingface_hub.errors import HfHubHTTPError

    token = os.environ.get("HF_TOKEN")
    if not token:
        raise BadInput(
            "HF_TOKEN is not set: publishing needs a write token (export HF_TOKEN=...), "
            "or use dest=DIR for a local copy"
        )
    get_session().timeout = cfg.timeout_s  # the client shared by every call; its default is no timeout at all
    api = HfApi(token=token)  # the endpoint is HF_ENDPOINT (huggingface_hub reads it), default huggingface.co
    where = f"{api.endpoint}/datasets/{cfg.repo_id}@{cfg.revision}"
    try:
        api.whoami()
    except HfHubHTTPError as e:
        status = e.response.status_code
        if status in (401, 403):
            raise BadInput(f"{api.endpoint}: the token in HF_TOKEN was refused ({status})") from None
        raise BadInput(
            f"{api.endpoint}/api/whoami-v2 answered {status} {e.response.reason_phrase}"
            f"{answer_text(e.response, token)}: the server is failing, or HF_ENDPOINT is not a Hub "
            "(unset: huggingface.co); the token was not checked"
        ) from None
    except json.JSONDecodeError:  # answered 200 with a web page: something that is not a Hub (requests' is one too)
        raise BadInput(
            f"{api.endpoint}/api/whoami-v2 answered with non-JSON (HTML?): HF_ENDPOINT is not a Hub "
            "(unset: huggingface.co); the token was not checked"
        ) from None
    except Exception as e:  # the client's transport error (requests' or httpx's, by version): a wrong HF_ENDPOINT
        if is_timeout(e):
            raise BadInput(
                f"{api.endpoint} did not answer within {cfg.timeout_s:g} s (timeout_s={cfg.timeout_s:g}): "
                "check HF_ENDPOINT (unset: huggingface.co) and the network, or raise timeout_s"
            ) from None
        cause = f"{type(e).__name__}: {e}".replace(token, "***")
        raise BadInput(
            f"{api.endpoint} is not reachable ({cause}); check HF_ENDPOINT (unset: huggingface.co) and the network"
        ) from None
    try:
        api.create_repo(cfg.repo_id, repo_type="dataset", private=cfg.private, exist_ok=True)
        if cfg.revision != "main":
            api.create_branch(cfg.repo_id, repo_type="dataset", branch=cfg.revision, exist_ok=True)
        before = api.dataset_info(cfg.repo_id, revision=cfg.revision).sha
        remote = api.list_repo_files(cfg.repo_id, repo_type="dataset", revision=cfg.revision)
        wanted = {f.relative_to(folder).as_posix() for f in files}
        stale = [p for p in remote if p.startswith(MANAGED) and p not in wanted]
        ops = [CommitOperationAdd(path_in_repo=f.relative_to(folder).as_posix(), path_or_fileobj=str(f)) for f in files]
        ops += [CommitOperationDelete(path_in_repo=p) for p in stale]
        info = api.create_commit(
            cfg.repo_id, ops, commit_message=message, repo_type="dataset", revision=cfg.revision, parent_commit=before
        )
    except PublishError:
        raise
    except Exception as e:  # a cut connection, a refused card, a server error: nothing was committed
        cause = failure(e, cfg.timeout_s).replace(token, "***")
        raise PublishError(
            f"publishing to {where} failed, nothing was committed: {cause}\n"
            "Re-run the same command to finish: files that already arrived are not sent again."
        ) from None
    return info.oid, info.oid != before


def is_timeout(error: BaseException) -> bool:
    """A timeout of the Hub client's transport (httpx's or requests' by version: matched by name)."""
    return any("Timeout" in type(e).__name__ for e in (error, error.__cause__, error.__context__) if e is not None)


def answer_text(response, token: str) -> str:
    """`` (the server's words)`` from an error response, short and without the token; '' if it said nothing."""
    try:
        text = " ".join(response.text.split())[:200]
    except Exception:  # a streamed body that was not read
        return ""
    text = text.replace(token, "***") if token else text
    return f" ({text})" if text else ""


def failure(error: BaseException, timeout_s: float) -> str:
    """One clause for what went wrong with a request: ``METHOD URL answered STATUS ...`` or no answer in time."""
    from huggingface_hub.errors import HfHubHTTPError  # heavy: huggingface_hub loads only for an upload

    if isinstance(error, HfHubHTTPError) and error.response is not None:
        r = error.response
        return f"{r.request.method} {r.request.url} answered {r.status_code} {r.reason_phrase}{answer_text(r, '')}"
    if is_timeout(error):
        request = getattr(error, "request", None)
        try:
            target = f"{request.method} {request.url}: " if request is not None else ""
        except Exception:  # httpx raises when an error carries no request
            target = ""
        return f"{target}no answer within {timeout_s:g} s (timeout_s={timeout_s:g})"
    return f"{type(error).__name__}: {error}"


TOOL = "data_cards.publish"


def place(staged: Path, files: list[Path], dest: Path, owned: list[str]) -> list[Path]:
    """Move the staged ``files`` into ``dest``; delete the files an earlier publish wrote there and this
    one does not (``owned``), nothing else; then record what is there now."""
    names = [f.relative_to(staged).as_posix() for f in files]
    for old in set(owned) - set(names):
        (dest / old).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # its folder too, once empty (a config no longer published)
            (dest / old).parent.rmdir()
    for name in names:
        with atomic_output(dest / name) as tmp:
            shutil.copyfile(staged / name, tmp)
    record_folder(dest, TOOL, names)
    return [dest / name for name in names]


def run(cfg: PublishConfig) -> dict:
    started = time.perf_counter()
    dest = Path(cfg.dest) if cfg.dest else None
    owned = claim_folder(dest, TOOL, "overwrite=true", cfg.overwrite) if dest else []  # refuse before any work
    with tempfile.TemporaryDirectory(prefix="publish-") as tmp:
        folder = Path(tmp)
        files, counts = stage(cfg, folder)
        summary = ", ".join(f"{n} {k}" for k, n in counts.items()) or "no rows"
        result = {"configs": counts, "files": len(files)}
        if dest:
            place(folder, files, dest, owned)
            print(f"wrote {len(files)} files ({summary}) to {dest}")
            return {**result, "dest": str(dest), "seconds": round(time.perf_counter() - started, 2)}
        message = cfg.commit_message or f"Publish AutoCoA sets: {summary}"
        oid, committed = push(cfg, folder, files, message)
    state = "committed" if committed else "unchanged, no commit"
    print(f"{cfg.repo_id}@{cfg.revision}: {state} ({summary}); head {oid}")
    return {**result, "commit": oid, "committed": committed, "seconds": round(time.perf_counter() - started, 2)}


@entry_point("publish")
def main(argv: list[str] | None = None) -> int:
    cfg = cli(PublishConfig, "publish", sys.argv[1:] if argv is None else argv, doc=__doc__)
    try:
        run(cfg)
    except PublishError as e:  # not bad input: the same command finishes the upload
        print(one_line("publish", e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
