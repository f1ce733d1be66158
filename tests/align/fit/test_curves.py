"""The held-out curve rules: best step, and plateau / overfitting / improving by the documented rule."""

from __future__ import annotations

from tokalign.align.fit.curves import best_heldout, heldout_row, heldout_verdict


def _rows(train, heldout, every=10):
    rows = [{"step": s, "loss": v, "temperature": 0.05} for s, v in enumerate(train, start=1)]
    rows += [{"step": every * (i + 1), "heldout_loss": v, "heldout_i2t_R@1": 0.1, "heldout_t2i_R@1": 0.2}
             for i, v in enumerate(heldout)]
    return rows


def test_held_out_loss_rising_while_training_falls_is_overfitting():
    rows = _rows([5 - 0.04 * s for s in range(60)], [4.0, 3.5, 3.4, 3.6, 3.8, 4.0])
    verdict = heldout_verdict(rows)
    assert verdict["verdict"] == "overfitted" and verdict["best_step"] == 30
    assert "overfitted" in verdict["sentence"] and "step 30" in verdict["sentence"]
    assert best_heldout(rows)["step"] == 30


def test_a_flat_second_half_is_a_plateau_and_a_falling_one_is_improving():
    train = [5 - 0.01 * s for s in range(60)]
    assert heldout_verdict(_rows(train, [4.0, 3.0, 2.9, 2.89, 2.885, 2.88]))["verdict"] == "plateaued"
    assert heldout_verdict(_rows(train, [4.0, 3.5, 3.1, 2.8, 2.5, 2.2]))["verdict"] == "improving"


def test_held_out_loss_rising_with_the_training_loss_is_no_overfitting():
    train = [3 + 0.01 * s for s in range(60)]
    assert heldout_verdict(_rows(train, [3.0, 2.9, 3.2, 3.4, 3.6, 3.9]))["verdict"] == "plateaued"


def test_too_few_evaluations_say_so():
    verdict = heldout_verdict(_rows([3.0] * 20, [2.0, 1.9]))
    assert verdict["verdict"] == "unknown" and "--eval-every" in verdict["sentence"]
    assert best_heldout([]) is None


def test_heldout_row_flattens_an_evaluation():
    result = {"pairs": 16, "loss": 2.5, "i2t": {"R@1": 0.25, "R@5": 0.5}, "t2i": {"R@1": 0.125, "R@5": 0.5},
              "chance": {"R@1": 1 / 16}}
    assert heldout_row(7, result) == {"step": 7, "heldout_loss": 2.5, "heldout_i2t_R@1": 0.25, "heldout_i2t_R@5": 0.5,
                                      "heldout_t2i_R@1": 0.125, "heldout_t2i_R@5": 0.5, "heldout_pairs": 16}
