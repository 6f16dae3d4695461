"""GitHub's record of the app's webhook deliveries, as its REST API shows it.

`GET /app/hook/deliveries` lists every attempt, newest first, `per_page` (at most 100) at a time, the next
page named by a `cursor` in the `Link` header; a redelivery keeps its delivery's GUID and gets a new id.
`POST /app/hook/deliveries/{id}/attempts` answers 202 and queues the attempt: GitHub then sends it, which
here the test does (`take_requested`), as GitHub would, to the web app under test. GitHub keeps
deliveries three days: older ones are not listed, and asking for one again answers 404.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

RETENTION = timedelta(days=3)


@dataclass(frozen=True)
class Delivery:
    guid: str
    event: str
    body: bytes


class FakeDeliveries:
    def __init__(self) -> None:
        self.attempts: list[dict[str, Any]] = []  # oldest first
        self.bodies: dict[str, Delivery] = {}
        self.requested: list[Delivery] = []
        self._ids = itertools.count(90_000)
        self._lock = threading.Lock()

    def record(
        self, guid: str, event: str, body: bytes, status_code: int, age_s: float = 0.0, installation_id: int = 1
    ) -> None:
        """One attempt of delivery `guid` and how the app answered it (0: no answer). An app's deliveries
        all come from an installation: GitHub names it."""
        with self._lock:
            redelivery = guid in self.bodies
            self.bodies.setdefault(guid, Delivery(guid, event, body))
            at = datetime.now(UTC) - timedelta(seconds=age_s)
            self.attempts.append(
                {
                    "id": next(self._ids),
                    "guid": guid,
                    "delivered_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "redelivery": redelivery,
                    "duration": 0.01,
                    "status": "OK" if 200 <= status_code < 300 else f"Invalid HTTP Response: {status_code}",
                    "status_code": status_code,
                    "event": event,
                    "action": None,
                    "installation_id": installation_id,
                    "repository_id": None,
                }
            )

    def take_requested(self) -> list[Delivery]:
        """The attempts the app asked for since the last call, for the test to send."""
        with self._lock:
            taken, self.requested = self.requested, []
        return taken

    @staticmethod
    def _kept(attempt: dict[str, Any]) -> bool:
        at = datetime.strptime(attempt["delivered_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        return datetime.now(UTC) - at <= RETENTION

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.get("/app/hook/deliveries")
        async def deliveries(request: Request, per_page: int = 30, cursor: str | None = None) -> Response:
            per_page = max(1, min(per_page, 100))
            newest = [a for a in reversed(self.attempts) if self._kept(a)]
            start = next((i + 1 for i, a in enumerate(newest) if str(a["id"]) == cursor), 0) if cursor else 0
            page = newest[start : start + per_page]
            headers = {}
            if start + per_page < len(newest):
                url = request.url.include_query_params(per_page=per_page, cursor=page[-1]["id"])
                headers["Link"] = f'<{url}>; rel="next"'
            return JSONResponse(page, headers=headers)

        @router.post("/app/hook/deliveries/{delivery_id}/attempts")
        async def redeliver(delivery_id: int) -> JSONResponse:
            attempt = next((a for a in self.attempts if a["id"] == delivery_id and self._kept(a)), None)
            if attempt is None:
                return JSONResponse({"message": "Not Found"}, status_code=404)
            with self._lock:
                self.requested.append(self.bodies[attempt["guid"]])
            return JSONResponse({}, status_code=202)

        return router
