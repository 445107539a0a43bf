"""Threads kept in a conversation object (``--store conversation``), against the local server's conversations."""

from __future__ import annotations

import pytest
from IPython.utils.capture import capture_output

import nbopenai
from nbopenai._turns._conversations import NEW_CONVERSATION


def responses_sent(server):
    return [r.body for r in server.requests if r.method == "POST" and r.path == "/v1/responses"]


def items_of(server, session, thread="c"):
    conversation = server.state.conversations[session.threads.get(thread).conversation_id]
    return [(item.get("role"), str(item.get("content"))) for item in conversation.items]


def test_the_second_turn_sends_the_conversation_and_not_the_first_prompt(local_server, make):
    session = make()
    session.ask("My name is Ada.", thread="c", thread_store="conversation")
    answer = session.ask("What is my name?", thread="c")
    assert "Ada" in answer.text  # the model saw the first turn: from the conversation's items
    first, second = responses_sent(local_server)
    conversation = session.threads.get("c").conversation_id
    assert conversation.startswith("conv_") and first["conversation"] == second["conversation"] == conversation
    assert "previous_response_id" not in second
    assert [item["content"] for item in second["input"]] == ["What is my name?"]
    created = [r for r in local_server.requests if r.path == "/v1/conversations"]
    assert len(created) == 1 and created[0].body["metadata"] == {"nbopenai_thread": "c"}
    assert len(items_of(local_server, session)) == 4  # two prompts, two answers
    assert session.threads.summary_rows()[-1]["kind"] == "conversation"


def test_a_rerun_cell_rewinds_the_conversation(local_server, make):
    session = make()
    for cell, prompt in (("one", "My name is Ada."), ("two", "I live in Paris."), ("three", "I like tea.")):
        session.ask(prompt, thread="c", thread_store="conversation", cell_id=cell)
    answer = session.ask("I live in Rome.", thread="c", cell_id="two")  # re-run of the second cell
    assert answer.notice == "thread c: re-ran turn 2 of 3, 1 later turn dropped"
    kept = items_of(local_server, session)
    prompts = [content for role, content in kept if role == "user"]
    assert len(kept) == 4 and "My name is Ada." in prompts[0] and "I live in Rome." in prompts[1]
    assert not any("Paris" in content or "tea" in content for _, content in kept if _ == "user")
    assert [turn.prompt for turn in session.threads.get("c").turns] == ["My name is Ada.", "I live in Rome."]
    again = session.ask("My name is Bob.", thread="c", cell_id="one")  # the first cell: every item goes
    assert next(content for role, content in items_of(local_server, session) if role == "user").count("Bob") == 1
    assert len(items_of(local_server, session)) == 2 and again.status == "completed"


def test_tool_rounds_send_only_the_results_to_the_conversation(local_server, make):
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    session = make()
    answer = session.ask("use get_weather for Paris", tools=[get_weather], thread="c", thread_store="conversation")
    first, second = responses_sent(local_server)
    assert second["conversation"] == first["conversation"] and "previous_response_id" not in second
    assert [item["type"] for item in second["input"]] == ["function_call_output"]
    assert answer.status == "completed" and "sunny in Paris" in answer.text


def test_a_dry_run_sends_nothing_and_shows_where_the_conversation_goes(local_server, make):
    session = make(thread_store="conversation")
    prepared = session.prepare("Hello", thread="c")
    assert prepared.params["conversation"] == NEW_CONVERSATION and local_server.requests == []


def test_the_kind_sticks_and_is_checked(local_server, make):
    session = make()
    session.ask("Hello", thread="c", thread_store="conversation")
    session.ask("Again", thread="c")  # no --store: the thread stays a conversation
    with pytest.raises(nbopenai.UsageError, match="kept in a conversation; use --new"):
        session.ask("Hi", thread="c", thread_store="response")
    with pytest.raises(nbopenai.UsageError, match="not compacted"):
        session.compact("c")
    with pytest.raises(nbopenai.UsageError, match="cannot go with store=False"):
        session.ask("Hi", thread="d", thread_store="conversation", store=False)
    session.configure(thread_store="conversation")  # a default: store=False threads keep their items here
    session.ask("Hi", thread="e", store=False)
    assert session.threads.get("e").kind == "items re-sent"


def test_the_magic_and_the_threads_table(ip, local_server):
    with capture_output():
        ip.run_cell_magic("ask", "-t notes --store conversation", "My name is Ada.")
        ip.run_cell("%config AskMagics.thread_store = 'conversation'")
        ip.run_cell_magic("ask", "-t other", "Hello")
        ip.run_cell_magic("ask", "-t chained --store response", "Hello")
    table = ip.run_line_magic("nbopenai", "threads").set_index("thread")
    assert table.loc["notes", "kind"] == table.loc["other", "kind"] == "conversation"
    assert table.loc["chained", "kind"] == "response chain"
    assert table.loc["notes", "head"].startswith("conv_")
