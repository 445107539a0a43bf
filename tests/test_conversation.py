"""Thread planning: chains, re-runs rewinding, store=false replay."""

from nbopenai._turns._conversation import COMPACTED, Thread, Turn


def turn(n, cell=None):
    return Turn(prompt=f"p{n}", answer=f"a{n}", response_id=f"resp_{n}", model="m", status="completed", cell_id=cell,
                input_items=({"role": "user", "content": f"p{n}"},),
                output_items=({"role": "assistant", "content": f"a{n}"},))


def grow(thread, cells):
    for n, cell in enumerate(cells, start=1):
        thread.commit(thread.plan(cell), turn(n, cell))


def test_first_turn_has_no_previous_and_next_chains_to_head():
    thread = Thread("default")
    plan = thread.plan("c1")
    assert plan.previous_response_id is None and plan.notice("default") is None
    thread.commit(plan, turn(1, "c1"))
    assert thread.plan("c2").previous_response_id == "resp_1"


def test_rerunning_a_cell_rewinds_to_the_turn_before_it_and_says_so():
    thread = Thread("default")
    grow(thread, ["c1", "c2", "c3", "c4", "c5"])
    plan = thread.plan("c2")
    assert plan.previous_response_id == "resp_1"
    assert plan.notice("default") == "thread default: re-ran turn 2 of 5, 3 later turns dropped"
    assert thread.commit(plan, turn(9, "c2")) == 2
    assert [t.response_id for t in thread.turns] == ["resp_1", "resp_9"]


def test_rerunning_the_last_cell_replaces_it_without_dropping():
    thread = Thread("default")
    grow(thread, ["c1", "c2"])
    plan = thread.plan("c2")
    assert plan.notice("t") == "thread t: re-ran turn 2 of 2"
    assert plan.dropped == 0


def test_without_cell_ids_turns_append():
    thread = Thread("default")
    grow(thread, [None, None, None])
    assert len(thread.turns) == 3 and thread.plan(None).previous_response_id == "resp_3"


def test_store_false_replays_items_of_kept_turns_only():
    thread = Thread("default", store=False)
    grow(thread, ["c1", "c2", "c3"])
    plan = thread.plan("c3")
    assert plan.previous_response_id is None
    assert [i["content"] for i in plan.replay] == ["p1", "a1", "p2", "a2"]


def test_a_gone_chain_resends_the_turns_since_the_last_compaction():
    thread = Thread("default")
    grow(thread, ["c1", "c2"])
    summary = Turn(prompt="(compacted)", answer="", response_id=None, model="m", status=COMPACTED,
                   input_items=({"role": "user", "content": "summary"},))
    thread.commit(thread.plan(None), summary)
    thread.commit(thread.plan("c4"), turn(4, "c4"))
    plan = thread.plan("c5", gone="resp_4")
    assert plan.previous_response_id is None and plan.base == 4
    assert [i["content"] for i in plan.replay] == ["summary", "p4", "a4"]  # not what the compaction replaced
    assert plan.notice("default") == (
        "thread default: resp_4 is no longer on the server (expired or deleted): 2 earlier turns sent again as input"
    )
    assert thread.plan("c5").previous_response_id == "resp_4"  # planned as usual, it chains
