"""Posterior means of a model's codes, in closed form or by Monte Carlo with the estimate's noise."""
import tensorflow as tf

MC_MEAN_SAMPLES = 64


def posterior_mean_and_noise(q, seed, num_samples=MC_MEAN_SAMPLES):
    """(E_q[z|x], the variance of that estimate), each [B, D].

    Closed form when the distribution has a mean (noise 0).  Otherwise (flows) the mean of S
    draws, whose Monte-Carlo variance is estimated by s^2 / S with s^2 the unbiased within-example
    variance of the draws, so that statistics across examples can remove it (see
    :func:`active_units`)."""
    try:
        mean = q.mean()
        return mean, tf.zeros_like(mean)
    except NotImplementedError:
        draws = q.sample(num_samples, seed=seed)
        mean = tf.reduce_mean(draws, axis=0)
        var = tf.reduce_sum(tf.square(draws - mean), axis=0) / float(num_samples - 1)
        return mean, var / float(num_samples)
