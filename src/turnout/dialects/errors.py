"""The client-side error every ingress dialect raises for a malformed request."""

from __future__ import annotations


class InvalidRequest(Exception):
    """The client's request is malformed: a 400 in the client's own error shape."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
