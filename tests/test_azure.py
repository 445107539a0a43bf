"""Azure OpenAI with Microsoft Entra ID tokens, end to end against the local server's rotating tokens.

The server (``token_lifetime``) lets in only tokens it issued and that have not expired; a test's
token provider asks it for one (``local_server.issue_token()``), as ``azure-identity`` asks Entra ID.
"""

from __future__ import annotations

import base64
import json

import httpx2
import pytest
from IPython.utils.capture import capture_output
from pydantic import BaseModel

import nbopenai
from nbopenai._core._azure import (
    TokenCache,
    TokenProviderError,
    TokenScrubber,
    token_expiry,
    v1_base_url,
)
from nbopenai._core._settings import Settings
from nbopenai._extract import extract
from nbopenai.local._azure import azure_path
from nbopenai.local._errors import ApiError


class Provider:
    """A token provider that counts its calls; ``token`` overrides what it returns."""

    def __init__(self, server, token=None, fails: Exception | None = None) -> None:
        self.server, self.token, self.fails, self.calls = server, token, fails, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.fails is not None:
            raise self.fails
        return self.token or self.server.issue_token()


@pytest.fixture
def azure(local_server, make):
    """``azure(provider, api_version=None, **overrides)``: a session on the local server's Azure URLs."""
    local_server.configure(token_lifetime=3600)

    def build(provider, api_version=None, **overrides):
        return make(base_url=None, azure_endpoint=local_server.url, api_version=api_version, token_provider=provider,
                    **overrides)

    return build


def model_requests(server):
    return [r for r in server.requests if r.path == "/v1/responses"]


@pytest.mark.parametrize(
    "api_version, sent", [(None, "/openai/v1/responses"), ("2025-04-01-preview", "/openai/responses")]
)
def test_the_provider_is_called_once_per_token_lifetime(local_server, azure, api_version, sent):
    provider = Provider(local_server)
    session = azure(provider, api_version=api_version)
    for prompt in ("one", "two", "three"):
        assert session.ask(prompt).text
    assert provider.calls == 1
    requests = model_requests(local_server)
    assert [r.sent_path for r in requests] == [sent] * 3
    assert all(r.headers["authorization"].startswith("Bearer ey") for r in requests)


def test_a_401_after_expiry_fetches_a_new_token_once_and_sends_again(local_server, azure):
    provider = Provider(local_server)
    session = azure(provider)
    session.ask("one")
    local_server.expire_tokens()  # the server ends the token before the client expected it to
    answer = session.ask("two")
    assert answer.text
    assert provider.calls == 2
    statuses = [r.headers["authorization"] for r in model_requests(local_server)]
    assert len(statuses) == 3 and statuses[1] != statuses[2]  # the refused one, then the same request with a new token
    assert [row.status for row in session.ledger.records()] == ["completed", "completed"]


def test_a_token_refused_again_after_the_refresh_is_one_clear_error(local_server, azure):
    expired = local_server.issue_token()
    local_server.expire_tokens()
    provider = Provider(local_server, token=expired)
    session = azure(provider)
    with pytest.raises(nbopenai.AuthenticationError, match="expired"):
        session.ask("hello")
    assert provider.calls == 2  # refreshed once, not in a loop
    assert len(model_requests(local_server)) == 2


def test_a_provider_that_raises_gives_one_clear_error_and_sends_nothing(local_server, azure):
    provider = Provider(local_server, fails=RuntimeError("DefaultAzureCredential failed to retrieve a token"))
    session = azure(provider)
    with pytest.raises(TokenProviderError) as caught:
        session.ask("hello")
    assert "The token provider failed (RuntimeError: DefaultAzureCredential failed" in str(caught.value)
    assert "az login" in caught.value.hint
    assert provider.calls == 1
    assert model_requests(local_server) == []


class City(BaseModel):
    name: str


@pytest.mark.parametrize("api_version", [None, "2025-04-01-preview"])
def test_a_token_that_expires_mid_extraction_is_refreshed_once(local_server, azure, api_version):
    local_server.configure(expire_tokens_after=4)
    provider = Provider(local_server)
    session = azure(provider, api_version=api_version)
    rows = [f"Row {i}: the city is Paris." for i in range(12)]
    frame = extract(session, City, rows, progress=False, cache=False, concurrency=3)
    assert (frame["_status"] == "ok").all()
    assert provider.calls == 2  # however many requests were in flight with the old token
    assert len([row for row in session.ledger.records() if row.status == "completed"]) == 12


def test_a_token_a_server_quotes_back_is_scrubbed(local_server, azure):
    provider = Provider(local_server)
    session = azure(provider)
    session.ask("one")
    token = session.settings.token_provider.known[0]
    local_server.inject("echo_auth_error")
    with pytest.raises(nbopenai.NbOpenAIError) as caught:
        session.ask("two")
    assert token not in str(caught.value) and token[-20:] not in str(caught.value)
    assert token in session.settings.secrets


def test_the_azure_key_goes_as_api_key_and_the_environment_is_read(local_server, make, monkeypatch):
    local_server.configure(require_api_key="azure-key-0123456789")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", local_server.url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-key-0123456789")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-" + "not-for-azure-0123456789")
    monkeypatch.setenv("AZURE_OPENAI_API_VERSION", "2025-04-01-preview")
    settings = Settings.from_env()
    assert (settings.azure_endpoint, settings.api_version) == (local_server.url, "2025-04-01-preview")
    assert settings.api_key.reveal() == "azure-key-0123456789"  # with an Azure endpoint, Azure's key first
    session = nbopenai.Session(model="nbopenai-local", ledger_path=":memory:")
    assert session.ask("hello").text
    request = model_requests(local_server)[-1]
    assert request.headers["api-key"] == "azure-key-0123456789" and "authorization" not in request.headers
    session.close()


def test_deployments_are_priced_as_the_models_they_run(local_server, azure):
    session = azure(Provider(local_server), deployments={"my-gpt": "gpt-4.1-mini"})
    assert session.prices.cost("my-gpt", 1_000_000) == session.prices.cost("gpt-4.1-mini", 1_000_000) is not None
    session.configure(deployments={})
    assert session.prices.cost("my-gpt", 1_000_000) is None


def _jwt(claims: dict) -> str:
    part = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"e30.{part}.sig"


def test_the_cache_refreshes_before_expiry():
    now = [1000.0]
    tokens = iter([_jwt({"iat": 1000, "exp": 4600}), _jwt({"iat": 4400, "exp": 8000})])
    cache = TokenCache(lambda: next(tokens), clock=lambda: now[0])
    first = cache.token()
    now[0] = 4299.0
    assert cache.token() == first and cache.fetches == 1
    now[0] = 4300.0  # five minutes before it expires
    assert cache.token() != first and cache.fetches == 2
    assert token_expiry(first) == (1000.0, 4600.0)


def test_azure_urls():
    assert azure_path("/openai/v1/responses", {}) == "/v1/responses"
    assert azure_path("/openai/responses", {"api-version": "x"}) == "/v1/responses"
    assert azure_path("/openai/deployments/my-gpt/chat/completions", {"api-version": "x"}) == "/v1/chat/completions"
    with pytest.raises(ApiError, match="api-version"):
        azure_path("/openai/responses", {})
    assert (
        v1_base_url("https://r.openai.azure.com/")
        == v1_base_url("https://r.openai.azure.com/openai")
        == "https://r.openai.azure.com/openai/v1/"
    )


def test_a_token_provider_that_is_not_callable_is_refused():
    with pytest.raises(nbopenai.UsageError, match="token_provider must be a zero-argument callable"):
        Settings(token_provider="not-a-function")


def test_the_scrubber_follows_the_tokens_as_they_change():
    tokens = iter(["first-token-0123456789", "second-token-0123456789"])
    cache = TokenCache(lambda: next(tokens))
    scrubber = TokenScrubber(("sk-fixed-secret-0123",), cache)
    first = cache.token()
    assert scrubber.data(f"echo {first} sk-fixed-secret-0123".encode()) == b"echo *** ***"
    cache.invalidate(first)
    second = cache.token()
    assert scrubber.text(f"{first} {second}") == "*** ***"  # the old one too: a late answer may quote it


def test_the_magic_sets_azure_up(ip, local_server):
    local_server.configure(token_lifetime=3600)
    ip.user_ns["get_token"] = Provider(local_server)
    ip.user_ns["get_token"].__name__ = "get_token"

    with capture_output() as captured:
        ip.run_cell(
            f"%nbopenai azure {local_server.url} --token-provider get_token --model nbopenai-local "
            "--deployment nbopenai-local=gpt-4.1-mini"
        )
    assert "Using Azure OpenAI at" in captured.stdout and "Entra ID tokens from get_token" in captured.stdout
    assert "nbopenai-local = gpt-4.1-mini" in captured.stdout
    with capture_output() as captured:
        ip.run_line_magic("nbopenai", "status")
    assert "(Azure OpenAI)" in captured.stdout and "Entra ID tokens from get_token" in captured.stdout
    with capture_output():
        ip.run_cell("%ask Hello from Azure")
    assert model_requests(local_server)[-1].sent_path == "/openai/v1/responses"
    session = ip.magics_manager.registry["AskMagics"].session
    assert session.ledger.records()[-1].cost_usd > 0  # priced as the model the deployment runs
    magics = ip.magics_manager.registry["AskMagics"]
    assert magics.deployments == {"nbopenai-local": "gpt-4.1-mini"}  # a trait, generated from the setting
    ip.run_cell("%config AskMagics.api_version = '2025-04-01-preview'")
    with capture_output():
        ip.run_cell("%ask And with an API version")
    assert model_requests(local_server)[-1].sent_path == "/openai/responses"


def test_a_server_in_another_process_issues_and_ends_tokens_through_its_admin_routes(local_server, azure):
    def provider():
        return httpx2.post(f"{local_server.url}/_nbopenai/issue_token").json()["token"]

    session = azure(provider)
    assert session.ask("hello").text
    assert httpx2.post(f"{local_server.url}/_nbopenai/expire_tokens").json() == {"ok": True}
    assert session.ask("again").text and len(model_requests(local_server)) == 3  # one refused, sent again
