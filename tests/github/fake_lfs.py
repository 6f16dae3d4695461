"""GitHub's Git LFS server (github.com/<owner>/<repo>.git/info/lfs) as git-lfs documents it: the batch
API (`POST .../objects/batch`, `application/vnd.git-lfs+json`) answering each object with a basic-transfer
download action, and the storage host that action points at (headers of its own, no GitHub token).

Credentials are GitHub's for LFS: HTTP Basic with the installation token as the password.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.github.fake_github import _TOKENS
from tests.servers import ThreadedServer

LFS_MEDIA_TYPE = "application/vnd.git-lfs+json"


class FakeLfs:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}  # oid -> content
        self.batch_requests: list[dict[str, Any]] = []
        self.batch_auth: list[str] = []  # the Authorization header of each batch request
        self.download_headers: list[dict[str, str]] = []
        # Serve other bytes than the pointer's (a corrupt or hostile storage host).
        self.tamper = False
        self._signatures: dict[str, str] = {}  # oid -> the header value its download action requires
        self._lock = threading.Lock()
        self.app = self._make_app()
        self.port = 0
        self._http = ThreadedServer(self.app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def store(self, content: bytes) -> str:
        """Keep an object; return the pointer file that names it (git-lfs spec v1)."""
        oid = hashlib.sha256(content).hexdigest()
        self.objects[oid] = content
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(content)}\n"

    def _make_app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/{owner}/{repo}/info/lfs/objects/batch")
        async def batch(owner: str, repo: str, request: Request) -> Response:
            header = request.headers.get("authorization", "")
            self.batch_auth.append(header)
            if not repo.endswith(".git") or LFS_MEDIA_TYPE not in request.headers.get("accept", ""):
                return JSONResponse({"message": "Not Found"}, status_code=404, media_type=LFS_MEDIA_TYPE)
            if not self._authorised(header):
                # The spec's answer to missing or bad credentials.
                body = {"message": "Credentials needed", "documentation_url": "https://docs.github.com/lfs"}
                return JSONResponse(
                    body,
                    status_code=401,
                    media_type=LFS_MEDIA_TYPE,
                    headers={"LFS-Authenticate": 'Basic realm="GitHub"'},
                )
            body = await request.json()
            self.batch_requests.append(body)
            if body.get("operation") != "download":
                return JSONResponse({"message": "operation not supported"}, status_code=422, media_type=LFS_MEDIA_TYPE)
            answers = []
            for wanted in body.get("objects") or []:
                oid, size = wanted.get("oid"), wanted.get("size")
                content = self.objects.get(oid)
                if content is None:
                    answers.append(
                        {"oid": oid, "size": size, "error": {"code": 404, "message": "Object does not exist"}}
                    )
                    continue
                with self._lock:
                    signature = self._signatures.setdefault(oid, secrets.token_hex(8))
                download = {
                    "href": f"{self.url}/storage/{oid}",
                    "header": {"Authorization": f"RemoteAuth {signature}"},
                    "expires_in": 3600,
                }
                answers.append(
                    {"oid": oid, "size": len(content), "authenticated": True, "actions": {"download": download}}
                )
            return JSONResponse(
                {"transfer": "basic", "objects": answers, "hash_algo": "sha256"}, media_type=LFS_MEDIA_TYPE
            )

        @app.get("/storage/{oid}")
        async def storage(oid: str, request: Request) -> Response:
            self.download_headers.append(dict(request.headers))
            if request.headers.get("authorization") != f"RemoteAuth {self._signatures.get(oid)}":
                return Response(status_code=403)
            content = self.objects[oid]
            return Response(b"X" + content[1:] if self.tamper else content, media_type="application/octet-stream")

        return app

    @staticmethod
    def _authorised(header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme != "Basic":
            return False
        user, _, token = base64.b64decode(encoded).decode().partition(":")
        return user == "x-access-token" and token in _TOKENS

    def start(self) -> FakeLfs:
        self._http.start()
        self.port = self._http.port
        return self

    def stop(self) -> None:
        self._http.stop()
