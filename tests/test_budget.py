import pytest
from IPython.utils.capture import capture_output

import nbopenai
from nbopenai._core._errors import BudgetExceeded
from nbopenai._ledger._budget import Budget
from nbopenai._ledger._prices import PriceTable
from nbopenai._ledger._usage import Totals

# $1 per 1M input tokens, so 1,000 tokens cost $0.001; output is dear, to show it is not counted.
PRICES = PriceTable.with_prices({"m": {"input": 1.0, "cached_input": 0.1, "output": 1000.0}})


def spent(tokens=0, usd=0.0, complete=True):
    return Totals(calls=1, input_tokens=tokens, total_tokens=tokens, cost_usd=usd, cost_complete=complete)


def test_no_caps_never_refuse():
    Budget().check(spent(10**12, 10**6), model="unpriced", estimated_input_tokens=10**9, prices=PRICES)


def test_under_both_caps_passes():
    Budget(usd=0.01, tokens=10_000).check(spent(5_000, 0.005), model="m", estimated_input_tokens=4_000, prices=PRICES)


def test_token_cap_refuses_with_the_numbers():
    with pytest.raises(BudgetExceeded) as refused:
        Budget(tokens=10_000).check(spent(9_000), model="m", estimated_input_tokens=1_001, prices=PRICES)
    message = str(refused.value)
    assert "9,000" in message and "10,000" in message and "1,001" in message


def test_reaching_the_token_cap_exactly_passes():
    Budget(tokens=10_000).check(spent(9_000), model="m", estimated_input_tokens=1_000, prices=PRICES)


def test_usd_cap_refuses_with_spent_cap_and_estimate():
    with pytest.raises(BudgetExceeded) as refused:
        Budget(usd=0.01).check(spent(usd=0.0095), model="m", estimated_input_tokens=1_000, prices=PRICES)
    message = str(refused.value)
    assert "$0.0095" in message and "$0.0100" in message and "$0.0010" in message and "1,000" in message


def test_output_is_not_counted_in_the_estimate():
    # 1,000 input tokens cost $0.001: fits $0.002, although any output at $1000/1M would not.
    Budget(usd=0.002).check(spent(usd=0.0), model="m", estimated_input_tokens=1_000, prices=PRICES)


def test_already_over_the_cap_refuses_even_an_empty_call():
    with pytest.raises(BudgetExceeded):
        Budget(usd=0.01).check(spent(usd=0.02), model="m", estimated_input_tokens=0, prices=PRICES)


def test_usd_cap_with_unpriced_model_refuses():
    with pytest.raises(BudgetExceeded, match="no price is known for model mystery"):
        Budget(usd=100.0).check(spent(), model="mystery", estimated_input_tokens=1, prices=PRICES)


def test_token_cap_alone_allows_unpriced_model():
    Budget(tokens=100).check(spent(), model="mystery", estimated_input_tokens=1, prices=PRICES)


def test_earlier_unpriced_calls_check_the_known_part():
    Budget(usd=0.01).check(spent(usd=0.001, complete=False), model="m", estimated_input_tokens=1_000, prices=PRICES)
    with pytest.raises(BudgetExceeded, match="not counting earlier calls with no known price"):
        Budget(usd=0.01).check(
            spent(usd=0.0095, complete=False), model="m", estimated_input_tokens=1_000, prices=PRICES
        )


def test_negative_cap_is_rejected():
    with pytest.raises(ValueError):
        Budget(usd=-1.0)
    with pytest.raises(ValueError):
        Budget(tokens=-1)


def test_the_token_budget_refusal_names_the_token_setting(ip, local_server):
    ip.run_cell("%config AskMagics.budget_tokens = 1")
    with capture_output(), pytest.raises(BudgetExceeded) as caught:
        ip.run_cell("%ask Hello, how are you today?")
    assert "token budget" in caught.value.message
    assert "AskMagics.budget_tokens" in caught.value.hint and "budget_usd" not in caught.value.hint
    assert local_server.requests == []


# ---- the check before every call reads running totals, not a sum over the ledger -----------------


def test_the_check_before_each_ask_reads_running_totals_that_match_the_ledger(local_server, tmp_path):
    path = tmp_path / "usage.sqlite3"
    with nbopenai.Session(
        base_url=local_server.base_url, model="nbopenai-local", ledger_path=str(path), budget_tokens=10**9
    ) as session:
        session.ask("first")  # the first check sums the session's rows (none yet) once
        statements = []
        session.ledger._db.run(lambda conn: conn.set_trace_callback(statements.append))
        for prompt in ("second", "third", "fourth"):
            session.ask(prompt)
        assert [s for s in statements if "SUM(" in s] == []  # rows were written, nothing was summed
        running = session.ledger.totals(session_id=session.session_id)
        assert running.calls == 4 and running.total_tokens > 0
    with nbopenai.Session(ledger_path=str(path)) as reader:  # a fresh sum over the file agrees
        assert reader.ledger.totals(session_id=session.session_id) == running
