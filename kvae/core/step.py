r"""The Keras training and evaluation steps every model shares (a mixin of
:class:`kvae.core.model.VariationalModel`).

``train_step`` minimises ``mean over the *global* batch of (bound loss + regularisers)`` (so N replicas
apply the same update as one device), with the noise of each step a function of the model's seed and
the optimizer step (so a resumed run draws what the uninterrupted one did); ``test_step`` gives each
batch of an evaluation its own draw.  ``fit`` checks and converts its inputs through the fit adapter
(the registry's ``hook`` entry ``fit``, :mod:`kvae.training.fit`: looked up by name so that the core
imports nothing above it).
"""
import keras
import tensorflow as tf

from kvae import registry
from kvae.parts.schedules import beta_value


def unless_skipped(value, sample_weight, skipped):
    """(value, sample_weight) for a metric's ``update_state``: unchanged, or for a skipped step
    (``skipped`` = 1.0, see ``skip_nonfinite_updates``) zeros of weight 0, so its non-finite values
    enter no mean."""
    if skipped is None:
        return value, sample_weight
    keep = 1.0 - skipped
    weight = keep * (tf.ones_like(value) if sample_weight is None else tf.cast(sample_weight, value.dtype))
    return tf.where(keep > 0, value, tf.zeros_like(value)), weight


class KerasStepMixin:
    """``train_step``, ``test_step``, resume batch-skipping and ``fit``."""

    def noise_seed(self):
        """A stateless seed for this step: the base seed folded with the optimizer step, so noise
        never repeats across steps and resumes with the optimizer state (replicas then take their
        own slice of the global batch's noise, see :meth:`standard_noise`)."""
        step = self.optimizer.iterations if self.optimizer is not None else tf.constant(0, tf.int64)
        seed = tf.random.experimental.stateless_fold_in(tf.constant([self.seed, 0], tf.int64), step)
        return tf.cast(seed, tf.int32)

    def _unpack(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None and isinstance(x, (tuple, list)):
            x, y = self._split_inputs(x)
        if not self.conditional:
            y = None
        return tf.cast(x, tf.float32), y, sample_weight

    def _current_beta(self):
        step = self.optimizer.iterations if self.optimizer is not None else 0
        return beta_value(self.beta, step)

    def _update_metrics(self, terms, per_example, reg_values, beta, sample_weight, skipped=None):
        extra = sum(self.losses) if self.losses else 0.0
        values = [per_example + extra, -terms["log_px_z"] + terms["kl"], -terms["log_px_z"], terms["kl"]]
        for tracker, value in zip((self.loss_tracker, self.neg_elbo_tracker, self.rec_tracker, self.kl_tracker), values):
            tracker.update_state(*unless_skipped(value, sample_weight, skipped))
        self.beta_tracker.update_state(beta)
        for tracker, value in zip(self.reg_trackers, reg_values):
            tracker.update_state(*unless_skipped(value, None, skipped))
        results = {m.name: m.result() for m in self.metrics}
        strategy = tf.distribute.get_strategy()
        if (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
                and strategy.extended._in_multi_worker_mode()):
            # Keras 3 reduces multi-worker step outputs with MEAN over axis 0, which fails on scalars
            # (tensorflow/tensorflow#72388); shape [1] reduces to the same scalar.
            results = {k: tf.reshape(v, [1]) for k, v in results.items()}
        return results

    def train_step(self, data):
        x, y, sample_weight = self._unpack(data)
        beta = self._current_beta()
        split = self.objective is not None and self.objective.splits_gradients
        with tf.GradientTape(persistent=split) as tape:
            terms = self.compute_terms(x, y, training=True, seed=self.noise_seed())
            per_example, reg_values = self.per_example_loss(terms, beta)
            loss = tf.nn.compute_average_loss(per_example, sample_weight=sample_weight)
            if self.losses:
                loss = loss + tf.nn.scale_regularization_loss(tf.add_n(self.losses))
            scaled = self.optimizer.scale_loss(loss)
            if split:  # PIWAE: the inference network follows its own bound
                encoder_loss = self.objective.encoder_loss(self, terms)
                for reg, value in zip(self.regularizer_layers, reg_values):
                    if getattr(reg, "encoder_term", True):  # not the VAE-GAN's GAN loss
                        encoder_loss = encoder_loss + value
                encoder_scaled = self.optimizer.scale_loss(
                    tf.nn.compute_average_loss(encoder_loss, sample_weight=sample_weight))
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        if split:
            inference = {id(v) for v in self.encoder_network.trainable_variables + self.posterior.trainable_variables}
            chosen = [i for i, v in enumerate(variables) if id(v) in inference]
            encoder_grads = tape.gradient(encoder_scaled, [variables[i] for i in chosen])
            grads = list(grads)
            for i, g in zip(chosen, encoder_grads):
                grads[i] = g
        del tape
        own = {id(v) for v in self.model_variables}
        # regularisers' own variables (discriminators) get zero here: their optimizer steps them in
        # after_step; keeping them in the list keeps the optimizer's state aligned for save/load
        grads = [g if id(v) in own or g is None else tf.zeros_like(g) for g, v in zip(grads, variables)]
        if self.skip_nonfinite_updates and not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            skipped = self._apply_if_finite(grads, variables)
            self.skipped_tracker.update_state(skipped)
        else:
            skipped = None
            self.optimizer.apply(grads, variables)
        for reg in self.regularizer_layers:
            reg.after_step(self, terms)
        return self._update_metrics(terms, per_example, reg_values, beta, sample_weight, skipped)

    def _apply_if_finite(self, grads, variables):
        """Apply the step only if every replica's gradients are finite; else count the step
        (``optimizer.iterations``, which the resume and the schedules read) and change nothing else.
        Returns 1.0 for a skipped step, 0.0 for an applied one."""
        finite = [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]
        bad = tf.cast(tf.logical_not(tf.reduce_all(tf.stack(finite))), tf.float32)
        # one decision for all replicas (each holds its own part of the gradient here)
        bad = tf.minimum(tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, bad), 1.0)

        def skip():
            self.optimizer.iterations.assign_add(1)

        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            tf.cond(bad > 0, skip, lambda: self.optimizer.apply(grads, variables))
            return bad

        # The optimizer's apply synchronises the replicas (merge_call), which a cond in the replica
        # context cannot hold: decide in the cross-replica context, as keras' LossScaleOptimizer does.
        def cross_replica(distribution, bad, grads):
            def apply():
                distribution.extended.call_for_each_replica(self.optimizer.apply, args=(grads, variables))

            tf.cond(distribution.experimental_local_results(bad)[0] > 0, skip, apply)

        tf.distribute.get_replica_context().merge_call(cross_replica, args=(bad, grads))
        return bad

    def skip_batches(self, n):
        """Make the next ``n`` training batches be read and discarded without a step (used on resume
        by :class:`kvae.training.callbacks.SafeBackupAndRestore` for the batches applied before an interruption)."""
        self._batches_to_skip = int(n)

    def make_train_function(self, force=False):
        super().make_train_function(force)
        step = self.train_function
        if getattr(step, "_kvae_skipping", False):
            return step

        def train_function(iterator):
            # one call runs up to steps_per_execution steps; the skipped batches of a resumed epoch
            # are read in calls of the same size (a checkpoint lands at the end of a call, so the
            # count is normally a whole number of calls; a remainder is read, then a call runs)
            todo = getattr(self, "_batches_to_skip", 0)
            if todo > 0:
                n = min(todo, self.steps_per_execution)
                for _ in range(n):
                    next(iterator)
                self._batches_to_skip = todo - n
                if n == self.steps_per_execution:
                    return {m.name: m.result() for m in self.metrics}
            return step(iterator)

        train_function._kvae_skipping = True
        self.train_function = train_function
        return train_function

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """``keras.Model.evaluate`` after checking the data as ``fit`` does (shape, NaN/inf, range,
        labels); the validation noise restarts with each evaluation."""
        if not kwargs.get("_use_cached_eval_dataset"):  # (fit's validation: checked when fit began)
            registry.get("hook", "check_inputs")(self, x, y, what="evaluation data")
        self._eval_batch.assign(0)
        return super().evaluate(x, y, *args, **kwargs)

    def test_step(self, data):
        x, y, sample_weight = self._unpack(data)
        beta = self._current_beta()
        # a different draw for every batch of an evaluation (the step's seed folded with the batch index)
        seed = tf.cast(tf.random.experimental.stateless_fold_in(self.noise_seed(), self._eval_batch.value), tf.int32)
        self._eval_batch.assign_add(1)
        terms = self.compute_terms(x, y, training=False, seed=seed)
        per_example, reg_values = self.per_example_loss(terms, beta)
        return self._update_metrics(terms, per_example, reg_values, beta, sample_weight)

    def call(self, inputs, training=False):
        """Reconstruction (decoder mean at the posterior mean) of ``x`` or ``(x, y)``."""
        x, y = self._split_inputs(inputs)
        return self.reconstruct(x, y, training=training)

    #: run ``fit`` with the objects that exist at its start (and after its first epoch, when the
    #: steps are traced) frozen out of the garbage collector's view (:class:`kvae.training.callbacks.FreezeGC`)
    freeze_gc_during_fit = True

    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        """``keras.Model.fit`` after checking the data (shape, NaN/inf, range, binary values); numpy
        arrays become kvae pipelines and Python's garbage collector is frozen while it runs
        (:func:`kvae.training.fit.checked_fit` says why)."""
        return registry.get("hook", "fit")(self, super().fit, x, y, *args, validation_data=validation_data, **kwargs)

