"""Numerical faults: a non-finite or exploding loss stops training with a message naming the
epoch (and the step for a non-finite loss) and the learning rate, and keeps the last good
checkpoint. (The NaN case at a given step is in tests/test_trainer.py.)"""

from __future__ import annotations

import interrupt_run as R
import pytest

from smallobj_pipeline.detection.checkpoint import load_checkpoint
from smallobj_pipeline.detection.engine.trainer import TrainingError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_loss_that_explodes_after_the_first_epoch_is_reported_as_a_too_high_learning_rate(
    run_data, tmp_path
):
    trainer = R.make_trainer(run_data, tmp_path, epochs=3, warmup_iters=0, schedule="none")

    def exploding(
        out, step
    ):  # from epoch 2 (step 4) on: the value explodes, the gradients stay sane
        return {k: v + 1000 * v.detach() for k, v in out.items()} if step > 3 else out

    R.on_training_losses(trainer.model, exploding)
    with pytest.raises(
        TrainingError,
        match=r"training diverged at epoch 2: mean loss .* over 20x the first epoch's "
        r".*learning rate \(0\.01\) is too high for this model: lower training\.lr"
        r".*last good checkpoint is kept at \S*last\.pt",
    ):
        trainer.fit()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 0  # epoch 1, not the diverged one


def test_a_learning_rate_far_too_high_stops_with_a_message_saying_so(run_data, tmp_path):
    trainer = R.make_trainer(run_data, tmp_path, epochs=2, lr=1e5, warmup_iters=0, schedule="none")
    with pytest.raises(
        TrainingError,
        match=r"non-finite loss \((nan|inf)\) at epoch 1, step \d+ .*"
        r"The learning rate \(1e\+05\) is probably too high for this model",
    ):
        trainer.fit()
    assert not (tmp_path / "last.pt").exists()  # no epoch completed: nothing bad was saved
