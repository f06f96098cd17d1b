"""``FakeHubServer``: a local Hub-protocol server written for these tests (not the Hugging Face Hub).

No real Hub can run offline (no installable server accepts uploads: see ``../shared/NOTES.md``), so
this speaks the subset of the Hub's HTTP protocol that the real ``huggingface_hub`` / ``datasets``
clients call to publish a dataset and load it back, with ``HF_HUB_DISABLE_XET=1`` (plain LFS):

  GET  /api/whoami-v2                                  who the bearer token belongs to (401 without one)
  POST /api/repos/create                               409 when it exists (the client's exist_ok reads it)
  POST /api/validate-yaml                              card metadata; JSON errors even on 400
  GET  /api/datasets/{repo}[/revision/{rev}]           repo info: sha, siblings, private
  POST /api/datasets/{repo}/branch/{name}              create a branch at the head of main
  POST /api/datasets/{repo}/preupload/{rev}            uploadMode (lfs for binary files), remote oid
  POST /datasets/{repo}.git/info/lfs/objects/batch     LFS batch: upload actions only for missing objects
  PUT  /lfs-objects/{oid}   POST /lfs-verify/{oid}     the LFS transfer (sha256 and size checked)
  POST /api/datasets/{repo}/commit/{rev}               NDJSON: header, file (base64), lfsFile, deletedFile
  POST /api/datasets/{repo}/paths-info/{rev}           form-encoded ``paths``
  GET  /api/datasets/{repo}/tree/{rev}[/{path}]        ``recursive``; LFS entries carry their sha256
  GET  /api/datasets/{repo}/commits/{rev}              history, newest first
  GET|HEAD /datasets/{repo}/resolve/{rev}/{path}       file bytes with X-Repo-Commit / ETag; Range reads

State lives in memory; ``cut(pattern)`` makes the server drop the connection half-way through the
body of the next matching request (an upload cut in the middle), ``fail(pattern, status)`` answers the next
matching requests with an error status (a failing server, or a URL that is no Hub), ``hang(pattern)``
accepts them and never answers (until ``stop()``), and ``requests`` logs every call.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from tests.data_cards.hub_rules import validate_card_metadata

_LFS_SUFFIXES = (".parquet", ".png", ".arrow", ".gz", ".bin")


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


@dataclass
class Blob:
    data: bytes
    lfs: str | None = None  # sha256 when stored as an LFS object

    @property
    def oid(self) -> str:  # what preupload returns as the remote oid (sha256 for LFS, git sha1 otherwise)
        return self.lfs or git_blob_oid(self.data)


@dataclass
class Commit:
    oid: str
    parent: str | None
    summary: str
    files: dict[str, Blob]


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        oid = self.branches.get(rev, rev)
        return self.commits.get(oid) if oid else None

    def history(self, rev: str) -> list[Commit]:
        out, c = [], self.resolve(rev)
        while c is not None:
            out.append(c)
            c = self.commits.get(c.parent) if c.parent else None
        return out


class FakeHubServer:
    """Start with ``FakeHubServer(token).start()``; ``url`` is the endpoint (``HF_ENDPOINT``)."""

    def __init__(self, token: str, user: str = "tester"):
        self.token, self.user = token, user
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self._cuts: list[re.Pattern] = []
        self._faults: list[list] = []  # [pattern, status (None = hang), body, times left]
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> "FakeHubServer":
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # hung requests end (their connection closes unanswered)
        self._httpd.shutdown()
        self._httpd.server_close()

    def cut(self, path_pattern: str) -> None:
        """Drop the connection half-way through the body of the next request whose path matches."""
        self._cuts.append(re.compile(path_pattern))

    def fail(self, path_pattern: str, status: int, body: dict | bytes | None = None, times: int = 1) -> None:
        """Answer the next ``times`` requests whose path matches with ``status`` and ``body`` (JSON by default)."""
        self._faults.append([re.compile(path_pattern), status, body, times])

    def hang(self, path_pattern: str, times: int = 1) -> None:
        """Accept the next ``times`` matching requests and never answer them (until ``stop()``)."""
        self._faults.append([re.compile(path_pattern), None, None, times])

    def clear_faults(self) -> None:
        self._faults.clear()

    def commits(self, repo_id: str, rev: str = "main") -> list[Commit]:
        return self.repos[repo_id].history(rev)

    # ---- operations, called by the handler with the lock held ----
    def commit(self, repo: Repo, rev: str, lines: list[dict]) -> tuple[int, dict]:
        head = repo.resolve(rev)
        if head is None and rev not in repo.branches:
            return 404, {"error": f"Revision not found: {rev}"}
        header = lines[0].get("value", {}) if lines and lines[0].get("key") == "header" else None
        if header is None:
            return 400, {"error": "first NDJSON line must be the header"}
        if header.get("parentCommit") and head and header["parentCommit"] != head.oid:
            return 412, {"error": "parentCommit is not the head of the revision"}
        files = dict(head.files) if head else {}
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                files[value["path"]] = Blob(base64.b64decode(value["content"]))
            elif key == "lfsFile":
                if value["oid"] not in self.lfs:
                    return 422, {"error": f"LFS object {value['oid']} for {value['path']} was never uploaded"}
                files[value["path"]] = Blob(self.lfs[value["oid"]], lfs=value["oid"])
            elif key in ("deletedFile", "deletedFolder"):
                gone = [p for p in files if p == value["path"] or p.startswith(value["path"].rstrip("/") + "/")]
                if not gone:
                    return 404, {"error": f"A file with this name doesn't exist: {value['path']}"}
                for p in gone:
                    del files[p]
            else:
                return 400, {"error": f"unknown NDJSON key {key!r}"}
        digest = hashlib.sha1(
            json.dumps(
                [head.oid if head else None, header.get("summary"), sorted((p, b.oid) for p, b in files.items())]
            ).encode()
        )
        oid = digest.hexdigest()
        repo.commits[oid] = Commit(oid, head.oid if head else None, header.get("summary", ""), files)
        repo.branches[rev] = oid
        return 200, {
            "commitOid": oid,
            "commitUrl": f"{self.url}/datasets/{repo.repo_id}/commit/{oid}",
            "pullRequestUrl": None,
            "success": True,
        }


def _entry(path: str, blob: Blob) -> dict:
    entry = {"type": "file", "path": path, "size": len(blob.data), "oid": git_blob_oid(blob.data)}
    if blob.lfs:
        entry["lfs"] = {"oid": blob.lfs, "size": len(blob.data), "pointerSize": 134}
    return entry


def _handler(hub: FakeHubServer):
    repo_path = r"(?P<repo>[^/]+/[^/]+)"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet: the test output stays readable
            pass

        # ---- plumbing ----
        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(
            self,
            status: int,
            body: bytes | dict | list = b"",
            headers: dict | None = None,
            content_type: str = "application/json",
        ) -> None:
            if not isinstance(body, bytes):
                body = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _authorized(self) -> bool:
            return self.headers.get("Authorization") == f"Bearer {hub.token}"

        def _cut_here(self) -> bool:
            path = urlsplit(self.path).path
            for pattern in list(hub._cuts):
                if pattern.search(path):
                    hub._cuts.remove(pattern)
                    half = int(self.headers.get("Content-Length") or 2) // 2
                    self.rfile.read(half)
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return True
            return False

        def _fault_here(self) -> bool:
            path = urlsplit(self.path).path
            with hub._lock:
                fault = next((f for f in hub._faults if f[0].search(path)), None)
                if fault is None:
                    return False
                fault[3] -= 1
                if fault[3] <= 0:
                    hub._faults.remove(fault)
            _, status, body, _ = fault
            if status is None:  # a server that went silent: hold the connection, never answer
                hub._stopping.wait(600)
                self.close_connection = True
                return True
            if self.command in ("POST", "PUT"):
                self._body()
            if body is None:
                body = {"error": f"fake hub: status {status} for {path}"}
            self._send(status, body, content_type="application/json" if isinstance(body, dict) else "text/html")
            return True

        def _dispatch(self) -> None:
            hub.requests.append((self.command, self.path))
            if self._cut_here() or self._fault_here():
                return
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            body = self._body() if self.command in ("POST", "PUT") else b""
            for method, pattern, fn in ROUTES:
                # match the quoted path: a revision such as refs%2Fconvert%2Fparquet holds slashes
                m = re.fullmatch(pattern, url.path)
                if m and self.command in method.split():
                    args = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
                    with hub._lock:
                        return fn(self, body, query, **args)
            self._send(404, {"error": f"no route for {self.command} {url.path}"})

        do_GET = do_POST = do_PUT = do_HEAD = _dispatch

        # ---- helpers for routes ----
        def _repo(self, repo: str, write: bool = False) -> Repo | None:
            r = hub.repos.get(repo)
            if r is None or (r.private or write) and not self._authorized():
                self._send(
                    404 if not write or r is None else 401,
                    {"error": "Repository not found"},
                    headers={"X-Error-Code": "RepoNotFound"},
                )
                return None
            return r

        def _commit(self, repo: str, rev: str):
            """The repo's commit at ``rev``, or None after answering 404 (repo or revision unknown)."""
            r = self._repo(repo)
            if r is None:
                return None
            c = r.resolve(rev)
            if c is None:
                self._send(404, {"error": f"Invalid rev id: {rev}"}, headers={"X-Error-Code": "RevisionNotFound"})
            return c

        # ---- routes ----
        def whoami(self, body, query):
            if not self._authorized():
                return self._send(401, {"error": "Invalid credentials in Authorization header"})
            self._send(
                200,
                {
                    "type": "user",
                    "name": hub.user,
                    "orgs": [],
                    "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": "write"}},
                },
            )

        def create_repo(self, body, query):
            if not self._authorized():
                return self._send(401, {"error": "Invalid credentials in Authorization header"})
            req = json.loads(body)
            repo_id = f"{req.get('organization') or hub.user}/{req['name']}"
            if req.get("type") != "dataset":
                return self._send(400, {"error": "this test server hosts dataset repos only"})
            if repo_id in hub.repos:
                return self._send(
                    409, {"error": "You already created this dataset repo", "url": f"{hub.url}/datasets/{repo_id}"}
                )
            # huggingface_hub 2.x sends "visibility"; older clients sent "private"
            private = req.get("visibility") == "private" or bool(req.get("private"))
            repo = hub.repos[repo_id] = Repo(repo_id, private)
            repo.branches["main"] = ""  # the Hub's first commit adds .gitattributes
            attributes = base64.b64encode(b"*.parquet filter=lfs diff=lfs merge=lfs -text\n").decode()
            hub.commit(
                repo,
                "main",
                [
                    {"key": "header", "value": {"summary": "initial commit"}},
                    {"key": "file", "value": {"path": ".gitattributes", "content": attributes}},
                ],
            )
            self._send(200, {"url": f"{hub.url}/datasets/{repo_id}", "name": repo_id, "id": repo_id})

        def validate_yaml(self, body, query):
            req = json.loads(body)
            errors = validate_card_metadata(req.get("content", ""))
            self._send(400 if errors else 200, {"errors": [{"message": e} for e in errors], "warnings": []})

        def info(self, body, query, repo, rev="main"):
            c = self._commit(repo, rev)
            if c is None:
                return
            self._send(
                200,
                {
                    "id": repo,
                    "_id": repo,
                    "sha": c.oid,
                    "private": hub.repos[repo].private,
                    "disabled": False,
                    "gated": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "author": repo.split("/")[0],
                    "lastModified": "2026-01-01T00:00:00.000Z",
                    "createdAt": "2026-01-01T00:00:00.000Z",
                    "siblings": [{"rfilename": p} for p in sorted(c.files)],
                },
            )

        def branch(self, body, query, repo, name):
            r = self._repo(repo, write=True)
            if r is None:
                return
            if name in r.branches:
                return self._send(409, {"error": "Reference already exists"})
            r.branches[name] = r.branches["main"]
            self._send(200, {})

        def preupload(self, body, query, repo, rev):
            r = self._repo(repo, write=True)
            if r is None:
                return
            head = r.resolve(rev) or r.resolve("main")
            out = []
            for f in json.loads(body)["files"]:
                lfs = f["path"].endswith(_LFS_SUFFIXES) or f["size"] > 10 * 1024 * 1024
                remote = head.files.get(f["path"]) if head else None
                out.append(
                    {
                        "path": f["path"],
                        "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False,
                        "oid": remote.oid if remote else None,
                    }
                )
            self._send(200, {"files": out, "commitOid": head.oid if head else None})

        def lfs_batch(self, body, query, repo):
            if self._repo(repo, write=True) is None:
                return
            req = json.loads(body)
            objects = []
            for o in req["objects"]:
                entry = {"oid": o["oid"], "size": o["size"]}
                if o["oid"] not in hub.lfs:  # present objects get no actions: the client skips them
                    entry["actions"] = {
                        "upload": {"href": f"{hub.url}/lfs-objects/{o['oid']}"},
                        "verify": {"href": f"{hub.url}/lfs-verify/{o['oid']}"},
                    }
                objects.append(entry)
            self._send(
                200,
                {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                content_type="application/vnd.git-lfs+json",
            )

        def lfs_put(self, body, query, oid):
            if hashlib.sha256(body).hexdigest() != oid:
                return self._send(400, {"error": f"content does not hash to {oid}"})
            hub.lfs[oid] = body
            self._send(200, {})

        def lfs_verify(self, body, query, oid):
            req = json.loads(body)
            ok = oid in hub.lfs and len(hub.lfs[oid]) == req.get("size")
            self._send(200 if ok else 404, {} if ok else {"error": f"object {oid} missing or wrong size"})

        def commit(self, body, query, repo, rev):
            r = self._repo(repo, write=True)
            if r is None:
                return
            lines = [json.loads(x) for x in body.decode().splitlines() if x.strip()]
            status, reply = hub.commit(r, rev, lines)
            self._send(status, reply)

        def paths_info(self, body, query, repo, rev):
            r = self._repo(repo)
            if r is None:
                return
            c = r.resolve(rev)
            form = parse_qs(body.decode())  # the client sends application/x-www-form-urlencoded
            paths = form.get("paths", [])
            out = [_entry(p, c.files[p]) for p in paths if c and p in c.files]
            out += [
                {"type": "directory", "path": p, "oid": "0" * 40, "size": 0}
                for p in paths
                if c and p not in c.files and any(f.startswith(p.rstrip("/") + "/") for f in c.files)
            ]
            self._send(200, out)

        def tree(self, body, query, repo, rev, path=""):
            c = self._commit(repo, rev)
            if c is None:
                return
            prefix = path.strip("/") + "/" if path.strip("/") else ""
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            files = {p: b for p, b in c.files.items() if p.startswith(prefix)}
            if prefix and not files:
                return self._send(404, {"error": f"path {path} not found"}, headers={"X-Error-Code": "EntryNotFound"})
            out, dirs = [], set()
            for p in sorted(files):
                rest = p[len(prefix) :].split("/")
                for depth in range(1, len(rest)):
                    d = prefix + "/".join(rest[:depth])
                    if (recursive or depth == 1) and d not in dirs:
                        dirs.add(d)
                        out.append({"type": "directory", "path": d, "oid": "0" * 40, "size": 0})
                if recursive or len(rest) == 1:
                    out.append(_entry(p, files[p]))
            self._send(200, out)

        def commits(self, body, query, repo, rev):
            r = self._repo(repo)
            if r is not None:
                self._send(
                    200,
                    [
                        {
                            "id": c.oid,
                            "title": c.summary,
                            "message": "",
                            "authors": [{"user": hub.user}],
                            "date": "2026-01-01T00:00:00.000Z",
                        }
                        for c in r.history(rev)
                    ],
                )

        def resolve(self, body, query, repo, rev, path):
            r = self._repo(repo)
            if r is None:
                return
            c = r.resolve(rev)
            blob = c.files.get(path) if c else None
            if blob is None:
                return self._send(
                    404,
                    {"error": "Entry not found"},
                    headers={"X-Error-Code": "EntryNotFound" if c else "RevisionNotFound"},
                )
            data, status = blob.data, 200
            headers = {
                "X-Repo-Commit": c.oid,
                "ETag": f'"{blob.lfs or git_blob_oid(blob.data)}"',
                "Accept-Ranges": "bytes",
            }
            if blob.lfs:
                headers.update({"X-Linked-Etag": f'"{blob.lfs}"', "X-Linked-Size": str(len(blob.data))})
            rng = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
            if rng:
                start = int(rng.group(1)) if rng.group(1) else max(len(data) - int(rng.group(2)), 0)
                end = int(rng.group(2)) if rng.group(1) and rng.group(2) else len(data) - 1
                end = min(end, len(data) - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                data, status = data[start : end + 1], 206
            self._send(status, data, headers=headers, content_type="application/octet-stream")

    api = rf"/api/datasets/{repo_path}"
    ROUTES = [
        ("GET", r"/api/whoami-v2", Handler.whoami),
        ("POST", r"/api/repos/create", Handler.create_repo),
        ("POST", r"/api/validate-yaml", Handler.validate_yaml),
        ("GET", rf"{api}/revision/(?P<rev>.+)", Handler.info),
        ("POST", rf"{api}/branch/(?P<name>.+)", Handler.branch),
        ("POST", rf"{api}/preupload/(?P<rev>.+)", Handler.preupload),
        ("POST", rf"{api}/commit/(?P<rev>.+)", Handler.commit),
        ("POST", rf"{api}/paths-info/(?P<rev>[^/]+)", Handler.paths_info),
        ("GET", rf"{api}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", Handler.tree),
        ("GET", rf"{api}/commits/(?P<rev>.+)", Handler.commits),
        ("GET", api, Handler.info),
        ("POST", rf"/datasets/{repo_path}\.git/info/lfs/objects/batch", Handler.lfs_batch),
        ("PUT", r"/lfs-objects/(?P<oid>[0-9a-f]{64})", Handler.lfs_put),
        ("POST", r"/lfs-verify/(?P<oid>[0-9a-f]{64})", Handler.lfs_verify),
        ("GET HEAD", rf"/datasets/{repo_path}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", Handler.resolve),
    ]
    return Handler
