"""The few calls of Label Studio's REST API that review push and pull make, with retries and clear failures.

Not label-studio-sdk: every 2.x release (2.0.15 to 2.1.2 checked) pins opencv-python-headless below 4.13 or 5,
and this stack runs opencv 5 (the reviewer's image checks); installing the SDK would replace it. The endpoints
and the token handling follow the SDK 2.1.2 sources: a legacy token goes as ``Token <key>``; a personal access
token (a JWT refresh token) is exchanged at ``/api/token/refresh/`` for an access token sent as ``Bearer``.

The token is read from the environment only (`TOKEN_ENV`), kept out of every repr, message and log line.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from reliable_ad.errors import UserError
from reliable_ad.review.config import TOKEN_ENV, ReviewConfig

IMPORT_CHUNK = 500  # tasks per import request
RETRY_STATUS = (502, 503, 504)  # a proxy or a server still starting: the request was not processed


class ReviewServerError(UserError, RuntimeError):
    """Label Studio is unreachable, refuses the token, or refuses a request (the message says which)."""


@dataclass
class LabelStudio:
    url: str
    token: str = field(repr=False)
    retries: int = 3
    retry_delay_s: float = 2.0
    timeout_s: float = 60.0
    _access: tuple[str, float] | None = field(default=None, repr=False)  # exchanged JWT and its expiry

    @classmethod
    def from_config(cls, cfg: ReviewConfig, url: str | None = None) -> LabelStudio:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            raise ReviewServerError(
                f"{TOKEN_ENV} is not set: export the Label Studio access token (Account & Settings) in the "
                "environment; it is never read from a file or an option"
            )
        return cls(url or cfg.url, token, cfg.retries, cfg.retry_delay_s, cfg.timeout_s)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=self.timeout_s)

    # ------------------------------------------------------------------------------------------- projects

    def project(self, title: str) -> dict[str, Any] | None:
        """The project of this title (the first made, if several share it), or None."""
        found = [p for p in self._pages("/api/projects/", "results") if p.get("title") == title]
        return min(found, key=lambda p: p["id"]) if found else None

    def create_project(self, title: str, label_config: str, description: str) -> dict[str, Any]:
        body = {
            "title": title,
            "label_config": label_config,
            "description": description,
            "sampling": "Sequential sampling",  # the labelling stream follows task ids: the push's order
            "show_collab_predictions": True,
        }
        return dict(self._json("POST", "/api/projects/", json=body))

    def serve_folder(self, project: int, folder: str) -> None:
        """Let the server serve files under `folder` (a local-files storage of the project), once per folder."""
        existing = self._json("GET", "/api/storages/localfiles/", params={"project": project})
        if any(s.get("path") == folder for s in existing):
            return
        self._json("POST", "/api/storages/localfiles/", json={"project": project, "path": folder, "title": folder})

    # ---------------------------------------------------------------------------------------------- tasks

    def import_tasks(self, project: int, tasks: Sequence[dict[str, Any]]) -> list[int]:
        """Create tasks (with their predictions) in order; returns their ids."""
        ids: list[int] = []
        for start in range(0, len(tasks), IMPORT_CHUNK):
            chunk = list(tasks[start : start + IMPORT_CHUNK])
            answer = self._json("POST", f"/api/projects/{project}/import", params={"return_task_ids": True}, json=chunk)
            ids.extend(answer.get("task_ids") or [])
        return ids

    def export(self, project: int, all_tasks: bool = False) -> list[dict[str, Any]]:
        """Tasks with their annotations in one call (only annotated ones unless `all_tasks`)."""
        params = {"exportType": "JSON", "download_all_tasks": str(all_tasks).lower()}
        return list(self._json("GET", f"/api/projects/{project}/export", params=params))

    def annotate(self, task: int, result: list[dict[str, Any]], completed_by: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"result": result}
        if completed_by is not None:
            body["completed_by"] = completed_by
        return dict(self._json("POST", f"/api/tasks/{task}/annotations/", json=body))

    def update_annotation(self, annotation: int, result: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self._json("PATCH", f"/api/annotations/{annotation}/", json={"result": result}))

    def whoami(self) -> dict[str, Any]:
        return dict(self._json("GET", "/api/current-user/whoami"))

    # -------------------------------------------------------------------------------------------- plumbing

    def _pages(self, path: str, key: str) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            answer = self._json("GET", path, params={"page": page, "page_size": 100})
            yield from answer.get(key) or []
            if not answer.get("next"):
                return
            page += 1

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except json.JSONDecodeError as error:
            raise ReviewServerError(f"Label Studio at {self.url}: {method} {path} answered with no JSON") from error

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, retried while the server cannot be reached (only where a retry cannot act twice)."""
        last = ""
        for attempt in range(self.retries):
            if attempt:
                time.sleep(self.retry_delay_s * 2 ** (attempt - 1))
            try:
                response = self._http.request(method, path, headers=self._auth(), **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                last = f"{type(error).__name__}: {error}"
                continue
            except httpx.TransportError as error:
                if method != "GET":  # the server may have acted on it: a retry could import twice
                    raise ReviewServerError(f"Label Studio at {self.url}: {method} {path} failed ({error})") from error
                last = f"{type(error).__name__}: {error}"
                continue
            if response.status_code in RETRY_STATUS:
                last = f"HTTP {response.status_code}"
                continue
            self._check(response, method, path)
            return response
        raise ReviewServerError(
            f"Label Studio at {self.url} did not answer {method} {path} after {self.retries} tries ({last})"
        )

    def _check(self, response: httpx.Response, method: str, path: str) -> None:
        if response.status_code < 400:
            return
        try:
            body = response.json()
            detail = body.get("validation_errors") or body.get("detail") or body
        except (json.JSONDecodeError, AttributeError):
            detail = response.text[:300]
        if response.status_code in (401, 403):
            raise ReviewServerError(
                f"Label Studio at {self.url} refused the token from {TOKEN_ENV} "
                f"(HTTP {response.status_code} on {method} {path}): {detail}"
            )
        raise ReviewServerError(f"Label Studio at {self.url}: {method} {path} -> HTTP {response.status_code}: {detail}")

    def _auth(self) -> dict[str, str]:
        if _jwt_claims(self.token).get("token_type") != "refresh":
            return {"Authorization": f"Token {self.token}"}
        if self._access is None or self._access[1] < time.time() + 30:
            response = self._http.post("/api/token/refresh/", json={"refresh": self.token})
            self._check(response, "POST", "/api/token/refresh/")
            access = str(response.json()["access"])
            self._access = (access, float(_jwt_claims(access).get("exp", time.time() + 300)))
        return {"Authorization": f"Bearer {self._access[0]}"}


def _jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (the server verifies); {} for anything else, e.g. a legacy token."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}
