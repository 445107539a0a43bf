"""Long threads: context windows, the near-limit warning, compaction and its fallback."""

from __future__ import annotations

import pytest

import nbopenai
from nbopenai._turns._conversation import COMPACTED, Thread, Turn
from nbopenai._turns._window import ContextWindows, thread_tokens


def requests_to(server, path):
    return [r.body for r in server.requests if r.path == path and r.method == "POST"]


def test_context_windows_are_data_and_snapshots_use_their_base_model():
    windows = ContextWindows.load()
    assert windows.window("gpt-4.1-mini-2025-04-14") == 1_047_576
    assert windows.window("gpt-4o") == 128_000 and windows.window("o4-mini") == 200_000
    assert windows.window("gpt-5") == 400_000 and windows.window("nbopenai-local") == 128_000
    assert windows.window("someone-elses-model") is None
    assert windows.with_windows({"nbopenai-local": 10}).window("nbopenai-local") == 10


def turn(n, cell=None):
    return Turn(prompt=f"p{n}", answer=f"a{n}", response_id=f"resp_{n}", model="m", status="completed", cell_id=cell,
                input_items=({"role": "user", "content": f"p{n}"},),
                output_items=({"role": "assistant", "content": f"a{n}"},))


COMPACTION = Turn(prompt="(compacted)", answer="", response_id=None, model="m", status=COMPACTED,
                  input_items=({"type": "compaction", "encrypted_content": "x"},))


@pytest.mark.parametrize("store", [True, False])
def test_later_turns_build_on_a_compaction_never_on_what_it_replaced(store):
    thread = Thread("t", store=store)
    for n, cell in ((1, "c1"), (2, "c2")):
        thread.commit(thread.plan(cell), turn(n, cell))
    thread.commit(thread.plan(None), COMPACTION)
    plan = thread.plan("c3")
    assert plan.previous_response_id is None and plan.replay == COMPACTION.input_items
    thread.commit(plan, turn(3, "c3"))
    after = thread.plan("c4")
    if store:
        assert after.previous_response_id == "resp_3" and after.replay == ()
    else:
        assert [i.get("content", "compaction") for i in after.replay] == ["compaction", "p3", "a3"]
    rerun = thread.plan("c2")  # re-running a cell from before the compaction rewinds past it
    assert rerun.previous_response_id == ("resp_1" if store else None) and rerun.dropped == 2


def test_compaction_round_trip_chains_the_thread_on_from_the_compacted_state(local_server, make):
    session = make()
    session.ask("My name is Ada.")
    second = session.ask("The capital of Ruritania is Strelsau.")
    result = session.compact()
    assert result.method == "compact" and result.items == 1 and str(result).startswith("Thread default compacted")
    [compact_body] = requests_to(local_server, "/v1/responses/compact")
    assert compact_body == {"model": "nbopenai-local", "previous_response_id": second.response_id}
    # The next turn sends the compacted items instead of chaining to the old head...
    answer = session.ask("What is my name? What is the capital of Ruritania?")
    body = requests_to(local_server, "/v1/responses")[-1]
    assert "previous_response_id" not in body
    assert [item.get("type") or item["role"] for item in body["input"]] == ["compaction", "user"]
    assert set(body["input"][0]) == {"type", "encrypted_content", "id"}
    assert "Your name is Ada." in answer.text and "Strelsau" in answer.text
    # ...and the turn after chains as usual.
    session.ask("Thanks.")
    assert requests_to(local_server, "/v1/responses")[-1]["previous_response_id"] == answer.response_id
    assert list(session.usage()["kind"]) == ["ask", "ask", "compact", "ask", "ask"]
    assert list(session.history()["status"]) == ["completed", "completed", "compacted", "completed", "completed"]


def test_compaction_with_store_false_replays_only_what_came_after_it(local_server, make):
    session = make(store=False)
    session.ask("My name is Grace.")
    session.ask("I like tea.")
    session.compact()
    compact_body = requests_to(local_server, "/v1/responses/compact")[0]
    assert [item["role"] for item in compact_body["input"]] == ["user", "assistant", "user", "assistant"]
    session.ask("What is my name?")
    answer = session.ask("Still there?")
    body = requests_to(local_server, "/v1/responses")[-1]
    assert [item.get("type") or item["role"] for item in body["input"]] == ["compaction", "user", "assistant", "user"]
    assert answer.status == "completed"


def test_a_thread_near_its_window_warns_once(local_server, make):
    session = make()
    session.context_windows = ContextWindows.load().with_windows({"nbopenai-local": 150})
    quiet = session.ask("Hello.", thread="long")
    assert quiet.warning is None
    loud = session.ask("Tell me about the weather in Paris today, please, in some detail.", thread="long")
    thread = session.threads.get("long")
    assert thread_tokens(thread) >= 0.8 * 150
    assert loud.warning.startswith("thread long holds ")
    assert "of nbopenai-local's 150-token context window" in loud.warning
    assert "`%nbopenai compact -t long`" in loud.warning and "⚠" in loud.mime_bundle()["text/markdown"]
    assert session.ask("And tomorrow?", thread="long").warning is None  # once, not every turn
    session.compact("long")
    assert thread.warned_near_limit is False


def test_context_length_exceeded_names_the_command_for_its_thread(local_server, make):
    session = make()
    session.ask("My name is Ada.", thread="notes")
    local_server.configure(context_window=60)
    with pytest.raises(nbopenai.ContextLengthExceeded) as caught:
        session.ask("What is my name? Please answer at length.", thread="notes")
    assert "`%nbopenai compact -t notes`" in caught.value.hint
    assert len(session.threads.get("notes").turns) == 1


def test_without_a_compact_endpoint_the_thread_falls_back_to_auto_truncation(local_server, make):
    session = make()
    session.ask("My name is Ada.")
    session.ask("I like tea.")
    session.configure(base_url=local_server.base_url.replace("/v1", "/no-compact/v1"))
    result = session.compact()
    assert result.method == "truncation" and "HTTP 404" in str(result)
    assert session.threads.get().truncation == "auto"
    session.configure(base_url=local_server.base_url)
    local_server.configure(context_window=60)  # the chain no longer fits: the server drops old items
    answer = session.ask("What do I like?")
    assert requests_to(local_server, "/v1/responses")[-1]["truncation"] == "auto"
    assert answer.status == "completed"
    assert "compact" not in list(session.usage()["kind"])  # a missing endpoint is not a billed call


def test_nothing_to_compact_is_a_usage_error(local_server, make):
    session = make()
    with pytest.raises(nbopenai.UsageError, match="thread 'default' has no turns"):
        session.compact()
