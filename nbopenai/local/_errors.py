"""Errors in OpenAI's envelope: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "error_body", "model_not_found", "not_found"]


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class ApiError(Exception):
    """Raised by a route to answer with an HTTP error in the API's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def model_not_found(model: str) -> ApiError:
    """The API's answer for a model it does not serve (404 ``model_not_found``)."""
    return ApiError(404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found")


def not_found(what: str, id: str, param: str | None = None, code: str | None = None, why: str = "") -> ApiError:
    """The API's 404 for an id it does not have; ``why`` adds the offline server's reason (it was dropped)."""
    return ApiError(404, f"{what} with id '{id}' not found.{why}", param=param, code=code)
