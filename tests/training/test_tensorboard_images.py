"""kvae train writes pictures to TensorBoard each epoch: prior samples from fixed noise,
reconstructions of fixed validation images, and KL per dimension."""
import glob
import os

import numpy as np
import tensorflow as tf

from kvae.training import runs
from kvae.training.callbacks import TensorBoardImages


def _events(log_dir):
    found = {}
    for path in glob.glob(os.path.join(log_dir, "validation", "events.out.tfevents.*")):
        for raw in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(raw.numpy())
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value))
    return found


def test_train_writes_images_and_kl_each_epoch(tmp_path):
    out = tmp_path / "run"
    model, _ = runs.train(model="vae", dataset="digits", out=str(out), epochs=2, batch_size=50, hidden=(32,),
                          latent_dim=4, seed=2, verbose=0, limit=300)
    events = _events(str(out / "logs"))
    for tag in ("samples", "reconstructions", "kl_per_dim"):
        assert sorted(step for step, _ in events[tag]) == [0, 1], tag
    # the last epoch's samples image is the grid of the final model's samples from the fixed noise
    _, value = max(events["samples"], key=lambda e: e[0])
    png = tf.io.decode_png(value.tensor.string_val[2]).numpy()[..., 0] / 255.0
    cb = TensorBoardImages(str(tmp_path / "x"), np.zeros((16, 8, 8, 1), np.float32), seed=2)
    cb.set_model(model)
    samples, recs, kl = cb.grids()
    assert png.shape == samples.shape[1:3]
    np.testing.assert_allclose(png, samples[0, ..., 0], atol=1 / 255 + 1e-6)
    assert recs.shape[1:3] == (4 * (8 + 1) + 1, 8 * (8 + 1) + 1)  # 16 image/reconstruction pairs, 8 columns
    assert kl is not None and kl.shape == (4,) and np.all(kl >= 0)
