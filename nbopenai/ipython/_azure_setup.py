"""``%nbopenai azure``: the settings its options give, and the lines that say what the session now uses."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

from .._core._errors import UsageError
from .._core._settings import ENVIRONMENT, Settings, shown_url

__all__ = ["azure_changes", "describe_azure"]


def _deployments(pairs: list[str]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        name, sep, model = pair.partition("=")
        if not sep or not name.strip() or not model.strip():
            raise UsageError(f"--deployment takes NAME=MODEL (the deployment and the model it runs), not {pair!r}")
        found[name.strip()] = model.strip()
    return found


def azure_changes(settings: Settings, args: argparse.Namespace, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The settings ``%nbopenai azure``'s arguments change; the token provider is looked up by name in ``namespace``."""
    endpoint = args.target or settings.azure_endpoint or os.environ.get(ENVIRONMENT["azure_endpoint"])
    if not endpoint:
        raise UsageError("%nbopenai azure needs the resource endpoint (https://NAME.openai.azure.com), "
                         "on the line or in AZURE_OPENAI_ENDPOINT.")
    changes: dict[str, Any] = {"azure_endpoint": endpoint}
    if args.api_version:
        changes["api_version"] = args.api_version
    if args.token_provider:
        provider = namespace.get(args.token_provider)
        if not callable(provider):
            raise UsageError(f"--token-provider {args.token_provider}: no callable of that name in the notebook; "
                             "make one first, e.g. with azure-identity's get_bearer_token_provider.")
        changes["token_provider"] = provider
    if args.deployment:
        changes["deployments"] = {**settings.deployments, **_deployments(args.deployment)}
    if args.model:
        changes["model"] = args.model
    return changes


def describe_azure(settings: Settings) -> str:
    """What the session now sends to Azure: where, which URL shape, with which credential."""
    shape = f"API version {settings.api_version}" if settings.api_version else "the v1 API (/openai/v1/)"
    if settings.token_provider is not None:
        credential = f"Entra ID tokens from {settings.token_provider.name}"
    elif settings.api_key is not None:
        credential = f"the key {settings.api_key.masked}"
    else:
        credential = "no credential yet: set AZURE_OPENAI_API_KEY or pass --token-provider"
    lines = [
        f"Using Azure OpenAI at {shown_url(settings.azure_endpoint)}, {shape}, with {credential}.",
        f"Model (a deployment name): {settings.model}.",
    ]
    if settings.deployments:
        lines.append(
            "Priced as: " + ", ".join(f"{name} = {model}" for name, model in settings.deployments.items()) + "."
        )
    return "\n".join(lines)
