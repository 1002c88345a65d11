"""``tf.data`` pipelines of kvae's data: :func:`batches` (arrays to batches, each epoch's order a function
of the seed and the epoch number), :func:`pipeline_options` and the per-epoch Bernoulli sampler of
dynamically binarised data."""
import tensorflow as tf


def _bernoulli_sampler(seed):
    """x -> 1[u < x], u from a stateful generator that lives outside the pipeline, so every epoch
    (every new iterator) draws new pixels, even when a global seed makes in-graph random ops repeat."""
    generator = tf.random.Generator.from_seed(seed)

    def binarise(x):
        return tf.cast(generator.uniform(tf.shape(x)) < x, tf.float32)

    return binarise


#: parallel calls of a pipeline's ``map`` and batches prefetched (fixed: tf.data's autotuner is off)
PIPELINE_PARALLELISM = 2
PIPELINE_PREFETCH = 2


def pipeline_options():
    """``tf.data.Options`` of every kvae pipeline: the autotuner off.  With it on, creating an
    epoch's iterator waited ~1.1 s here every two or three epochs (the previous iterator's
    autotuning thread being torn down), a whole extra epoch of a 100-step MLP epoch; fixed
    parallelism (:data:`PIPELINE_PARALLELISM`, :data:`PIPELINE_PREFETCH`) keeps the steps fed."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def batches(x, y=None, batch_size=32, shuffle=True, seed=0, drop_remainder=False, render=None, transform=None):
    """A ``tf.data`` pipeline of batches of ``x`` (or ``(x, y)`` when ``y`` is given) from arrays.

    With ``shuffle=True`` epoch e's order is a stateless permutation keyed by (``seed``, e), e read
    from the variable ``dataset.kvae_epoch`` when an epoch's iterator is created
    (:class:`kvae.training.callbacks.DataEpoch` sets it; kvae models add that callback in ``fit``).
    ``render`` maps a batch of rows of ``x`` to images (factor data sets), ``transform`` maps a
    batch of images (dynamic binarisation).  Its cardinality is the number of batches per epoch;
    options: :func:`pipeline_options`."""
    n = len(x)
    steps = n // batch_size if drop_remainder else -(-n // batch_size)
    options = pipeline_options()
    if not shuffle:
        ds = tf.data.Dataset.from_tensor_slices((x, y) if y is not None else x)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        if render is not None:
            ds = ds.map((lambda f, *rest: (render(f), *rest)) if y is not None else render)
        if transform is not None:
            ds = ds.map((lambda b, *rest: (transform(b), *rest)) if y is not None else transform)
        return ds.prefetch(PIPELINE_PREFETCH).with_options(options)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_epoch")
    key = tf.constant(int(seed), tf.int64)
    xs = tf.constant(x)
    ys = tf.constant(y) if y is not None else None

    def epoch_order(_):
        order = tf.argsort(tf.random.stateless_uniform([n], seed=tf.stack([key, epoch.read_value()])))
        return tf.data.Dataset.from_tensor_slices(order)

    def gather(ids):
        xb = tf.gather(xs, ids)
        xb = render(xb) if render is not None else xb
        xb = transform(xb) if transform is not None else xb
        return (xb, tf.gather(ys, ids)) if ys is not None else xb

    ds = tf.data.Dataset.range(1).flat_map(epoch_order).batch(batch_size, drop_remainder=drop_remainder)
    if transform is not None:  # the transform (a stateful generator's draw) runs in order
        ds = ds.map(gather)
    else:
        ds = ds.map(gather, num_parallel_calls=PIPELINE_PARALLELISM, deterministic=True)
    ds = ds.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(PIPELINE_PREFETCH)
    ds = ds.with_options(options)
    ds.kvae_epoch = epoch
    return ds
