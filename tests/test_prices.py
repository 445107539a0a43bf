import datetime as dt
import json

import pytest

from nbopenai._core._errors import ConfigurationError
from nbopenai._ledger._prices import PriceTable, missing_price_note

SHIPPED_RATES = {
    "gpt-5": (1.25, 0.125, 10.00),
    "gpt-5-mini": (0.25, 0.025, 2.00),
    "gpt-5-nano": (0.05, 0.005, 0.40),
    "gpt-4.1": (2.00, 0.50, 8.00),
    "gpt-4.1-mini": (0.40, 0.10, 1.60),
    "gpt-4.1-nano": (0.10, 0.025, 0.40),
    "gpt-4o": (2.50, 1.25, 10.00),
    "gpt-4o-mini": (0.15, 0.075, 0.60),
    "o3": (2.00, 0.50, 8.00),
    "o4-mini": (1.10, 0.275, 4.40),
    "o3-mini": (1.10, 0.55, 4.40),
    "nbopenai-local": (0.0, 0.0, 0.0),
}


@pytest.fixture(scope="module")
def shipped():
    return PriceTable.load()


@pytest.mark.parametrize("model", sorted(SHIPPED_RATES))
def test_shipped_table_has_current_rates(shipped, model):
    price = shipped.price_for(model, at=dt.date(2025, 11, 20))
    assert (price.input, price.cached_input, price.output) == SHIPPED_RATES[model]


def test_shipped_entries_say_when_and_where_from(shipped):
    for model in shipped.models:
        price = shipped.price_for(model)
        assert price.as_of == dt.date(2025, 11, 20), model
        if model != "nbopenai-local":
            assert price.source.startswith("https://"), model


def test_latest_entry_effective_on_or_before_the_date_is_picked(shipped):
    def rates(at):
        price = shipped.price_for("o3", at=at)
        return price.input, price.output

    assert rates(dt.date(2025, 5, 1)) == (10.0, 40.0)
    assert rates(dt.date(2025, 6, 9)) == (10.0, 40.0)
    assert rates(dt.date(2025, 6, 10)) == (2.0, 8.0)
    assert rates(dt.datetime(2025, 6, 9, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))) == (
        2.0,
        8.0,
    )  # 04:00 UTC on the 10th
    assert rates(dt.datetime(2025, 6, 9, 12, 0, tzinfo=dt.timezone.utc).timestamp()) == (10.0, 40.0)
    assert rates(dt.date(2024, 1, 1)) == (10.0, 40.0)  # before launch: the launch price


def test_dated_entries_given_in_any_order():
    table = PriceTable.with_prices(
        {
            "m": [
                {"effective": "2025-03-01", "input": 3.0, "output": 3.0},
                {"effective": "2025-01-01", "input": 1.0, "output": 1.0},
                {"effective": "2025-02-01", "input": 2.0, "output": 2.0},
            ]
        }
    )
    assert [table.price_for("m", at=dt.date(2025, month, 15)).input for month in (1, 2, 3, 4)] == [1.0, 2.0, 3.0, 3.0]


def test_dated_snapshot_resolves_to_base_model(shipped):
    assert shipped.price_for("gpt-4.1-mini-2025-04-14") == shipped.price_for("gpt-4.1-mini")
    assert shipped.price_for("GPT-4.1-Mini") == shipped.price_for("gpt-4.1-mini")
    assert "o3-mini-2025-01-31" in shipped
    assert (
        PriceTable.with_prices({"gpt-3.5-turbo": {"input": 0.5, "output": 1.5}}).price_for("gpt-3.5-turbo-0125").input
        == 0.5
    )


def test_an_entry_for_the_snapshot_itself_wins(shipped):
    assert shipped.price_for("gpt-4o-2024-05-13", at=dt.date(2025, 1, 1)).input == 5.0
    assert shipped.price_for("gpt-4o-2024-08-06", at=dt.date(2025, 1, 1)).input == 2.5


def test_no_guessing_from_similar_names(shipped):
    assert shipped.price_for("gpt-5-pro") is None
    assert shipped.cost("ft:gpt-4o-mini:org::abc", 1000) is None
    assert "gpt-5-pro" not in shipped


def test_cached_tokens_are_part_of_input_and_billed_at_cached_rate(shipped):
    # 750k uncached at $2, 250k cached at $0.50, 100k output at $8.
    assert shipped.cost("gpt-4.1", 1_000_000, 250_000, 100_000) == pytest.approx(1.5 + 0.125 + 0.8)
    assert shipped.cost("gpt-4.1", 1_000_000, 0, 0) == pytest.approx(2.0)
    assert shipped.cost("gpt-4.1", 1_000_000, 1_000_000, 0) == pytest.approx(0.5)


def test_cached_count_above_input_is_capped(shipped):
    assert shipped.cost("gpt-4.1", 100, 500, 0) == shipped.cost("gpt-4.1", 100, 100, 0)


def test_no_cache_discount_bills_cached_at_input_rate(shipped):
    assert shipped.cost("gpt-4o-2024-05-13", 1_000_000, 500_000, 0) == pytest.approx(5.0)


def test_unknown_model_costs_none_with_a_note(shipped):
    assert shipped.cost("mystery-model", 10, 0, 10) is None
    note = missing_price_note("mystery-model")
    assert "mystery-model" in note and "not estimated" in note and "prices_path" in note


def test_override_file_adds_and_replaces_models(tmp_path, shipped):
    override = tmp_path / "prices.json"
    override.write_text(
        json.dumps(
            {
                "source": "https://example.com/our-contract",
                "models": {
                    "gpt-4.1-mini": {"input": 0.2, "cached_input": 0.05, "output": 0.8, "effective": "2025-09-01"},
                    "house-model": [{"input": 1.0, "output": 2.0}],
                },
            }
        )
    )
    table = PriceTable.load(override)
    # The override replaces every shipped entry of the model, whatever the date.
    assert table.price_for("gpt-4.1-mini", at=dt.date(2025, 5, 1)).input == 0.2
    assert table.price_for("gpt-4.1-mini").source == "https://example.com/our-contract"
    assert table.cost("house-model", 1_000_000, 0, 1_000_000) == pytest.approx(3.0)
    assert table.price_for("house-model").cached_input == 1.0
    assert table.price_for("gpt-5") == shipped.price_for("gpt-5")


def test_with_prices_on_a_table_keeps_its_overrides(tmp_path):
    override = tmp_path / "prices.json"
    override.write_text(json.dumps({"models": {"house-model": {"input": 1.0, "output": 2.0}}}))
    table = PriceTable.load(override).with_prices({"other": {"input": 3.0, "output": 3.0}})
    assert "house-model" in table and "other" in table and "gpt-5" in table
    assert "house-model" not in PriceTable.with_prices({"other": {"input": 3.0, "output": 3.0}})


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "could not read"),
        (json.dumps({"gpt-5": {"input": 1}}), "'models'"),
        (json.dumps({"models": {"m": {"input": 1.0}}}), "'output'"),
        (json.dumps({"models": {"m": {"input": -1.0, "output": 1.0}}}), "'input'"),
        (json.dumps({"models": {"m": {"input": 1.0, "output": 1.0, "effective": "June"}}}), "bad date"),
    ],
)
def test_bad_override_file_is_a_configuration_error(tmp_path, content, problem):
    override = tmp_path / "prices.json"
    override.write_text(content)
    with pytest.raises(ConfigurationError, match=problem):
        PriceTable.load(override)


def test_missing_override_file_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError, match="could not read"):
        PriceTable.load(tmp_path / "nope.json")
