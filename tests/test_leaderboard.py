"""The committed lite leaderboard (results/leaderboard_lite.*) holds what the README and
docs/scorecard.md say it holds: every built-in scored completely by the documented command, each
score the mean of its tasks' normalized accuracies, ranked by score, and the protocol figures the
README reports computed from it."""
import json
import statistics
from pathlib import Path

import pytest

from selectivbench.builders.config import TASKS
from selectivbench.models import MIXERS

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "selectivbench score --all --preset lite --out results --workers 2"
CARDS = json.loads((ROOT / "results" / "leaderboard_lite.json").read_text())


def test_every_builtin_is_scored_completely_by_the_documented_command():
    assert sorted(c["mixer"] for c in CARDS) == sorted(MIXERS)
    for card in CARDS:
        assert (card["preset"], card["command"], card["seeds"]) == ("lite", COMMAND, [0, 1])
        assert card["complete"] and card["failed_runs"] == 0 and card["mixer_plugin"] is None
        assert sorted(card["tasks"]) == sorted(TASKS)
        for task in card["tasks"].values():
            assert task["runs_done"] == task["runs"] == 4 and task["failed_runs"] == []
    assert COMMAND in (ROOT / "README.md").read_text() and COMMAND in (ROOT / "docs" / "scorecard.md").read_text()


@pytest.mark.parametrize("card", CARDS, ids=lambda c: c["mixer"])
def test_each_score_is_the_mean_of_its_tasks_normalized_accuracies(card):
    for task in card["tasks"].values():
        per_seed = [task["accuracy_per_seed"][str(s)] for s in card["seeds"]]
        assert task["accuracy"] == pytest.approx(statistics.fmean(per_seed), abs=1e-12)
        normalized = (task["accuracy"] - task["chance"]) / (task["bayes_ceiling"] - task["chance"])
        assert task["normalized"] == pytest.approx(normalized, abs=1e-12)
        assert 0 <= task["chance"] < task["bayes_ceiling"] <= 1
    assert card["score"] == pytest.approx(statistics.fmean(t["normalized"] for t in card["tasks"].values()), abs=1e-12)
    per_seed = [statistics.fmean(t["normalized_per_seed"][str(s)] for t in card["tasks"].values()) for s in card["seeds"]]
    assert card["score_std"] == pytest.approx(statistics.stdev(per_seed), abs=1e-12)


def test_the_ranking_follows_the_scores_and_the_readme_reports_its_protocol_figures():
    scores = [c["score"] for c in CARDS]
    assert scores == sorted(scores, reverse=True)
    assert [c["rank"]["rank"] for c in CARDS] == list(range(1, len(CARDS) + 1))
    readme = (ROOT / "README.md").read_text()
    spread, spread_std = max(scores) - min(scores), statistics.stdev(scores)
    worst_seed_std = max(CARDS, key=lambda c: c["score_std"])
    for figure in (f"{spread:.3f}", f"std {spread_std:.3f}", f"{worst_seed_std['score_std']:.3f}",
                   f"`{CARDS[0]['mixer']}`, {CARDS[0]['score']:.3f}", f"`{CARDS[-1]['mixer']}`, {CARDS[-1]['score']:.3f}",
                   f"`{worst_seed_std['mixer']}`"):
        assert figure in readme, figure
    table = (ROOT / "results" / "leaderboard_lite.md").read_text()
    for card in CARDS:
        assert f"| {card['rank']['rank']} | `{card['mixer']}` | {card['score']:.3f} ± {card['score_std']:.3f} |" in table
