"""The Train tab's scalar reader against real TensorBoard event files written by SummaryWriter."""

from __future__ import annotations

from torch.utils.tensorboard import SummaryWriter

from studio.scalars import ScalarReader


def test_reads_incrementally_and_maps_loss_curves(tmp_path):
    logdir = tmp_path / "logs" / "tensorboard"
    reader = ScalarReader(logdir)
    assert reader.refresh() == 0 and reader.tags() == []  # no folder yet

    writer = SummaryWriter(str(logdir))
    for step in range(0, 30, 10):
        writer.add_scalar("loss/g/total", 50.0 - step, step)
        writer.add_scalar("loss/d/total", 3.0, step)
        writer.add_scalar("loss/g/mel", 30.0 - step / 10, step)
        writer.add_scalar("learning_rate", 2e-4, step)
    writer.flush()
    assert reader.refresh() == 12
    assert reader.series("loss/g/total") == ([0, 10, 20], [50.0, 40.0, 30.0])
    assert reader.last_step() == 20
    assert reader.refresh() == 0  # nothing new: nothing read twice

    writer.add_scalar("loss/g/total", 25.0, 30)
    writer.add_scalar("loss/g/kl", 1.5, 30)
    writer.add_scalar("loss/g/dur", 0.7, 30)
    writer.flush()
    assert reader.refresh() == 3
    assert reader.series("loss/g/total")[0] == [0, 10, 20, 30]
    assert reader.loss_tags() == {"G total": "loss/g/total", "D total": "loss/d/total", "mel": "loss/g/mel",
                                  "kl": "loss/g/kl", "dur": "loss/g/dur"}
    rows = reader.loss_rows()
    assert {"step": 30, "value": 25.0, "curve": "G total"} in rows
    assert len([r for r in rows if r["curve"] == "D total"]) == 3
    writer.close()


def test_resumed_run_in_a_new_file_and_subfolders(tmp_path):
    logdir = tmp_path / "tb"
    first = SummaryWriter(str(logdir))
    first.add_scalar("loss/g/total", 10.0, 100)
    first.add_scalar("loss/g/total", 9.0, 200)
    first.close()
    reader = ScalarReader(logdir)
    reader.refresh()
    # The resumed run starts again from its checkpoint at step 200 and writes a second event file.
    second = SummaryWriter(str(logdir), filename_suffix=".resumed")
    second.add_scalar("loss/g/total", 8.5, 200)
    second.add_scalar("loss/g/total", 8.0, 300)
    second.close()
    evals = SummaryWriter(str(logdir / "eval"))
    evals.add_scalar("mel_error", 0.25, 300)
    evals.close()
    reader.refresh()
    assert reader.series("loss/g/total") == ([100, 200, 300], [10.0, 8.5, 8.0])
    assert reader.series("eval/mel_error") == ([300], [0.25])
    assert reader.series("missing") == ([], [])
