r"""VQ-VAE (van den Oord et al. 2017, "Neural Discrete Representation Learning").

The encoder's output is a grid of H x W code vectors z_e of size D, each replaced by its nearest
codebook entry (:class:`kvae.models.vqvae.quantize.VectorQuantizedPosterior`); the decoder sees the quantised
code through the straight-through estimator.  Loss per example (the paper's eq. 3):

    -log p(x | z_q) + ||sg(z_e) - e||^2 (``codebook="loss"`` only) + commitment * ||z_e - sg(e)||^2,

squared norms summed over the code's H W D numbers; with ``codebook="ema"`` (default, the paper's
Appendix A.1) the codebook moves by moving averages instead of the second term.  The prior over the
index grid is uniform while the autoencoder trains, so the reported KL is H W log K, a constant;
afterwards a PixelCNN over the indices (:class:`kvae.models.vqvae.code_prior.PixelCNNCodePrior`) is fitted to
the training images' codes (:meth:`VQVAE.fit_prior`, ``kvae fit-prior``), the reported KL becomes
-log p(k(x)) and ``-log p(x|z_q) - log p(k(x))`` a bound on -log p(x) (q is a point mass on k(x)).
Sampling (``sample``, the exported ``sample`` endpoint with explicit noise) draws an index map from
that prior (uniform before it is fitted) and decodes it.
Training logs ``commitment`` (||z_e - sg(e)||^2) and ``perplexity`` (exp of the entropy of the
batch's code usage, K at most).
"""
import keras
import numpy as np
import tensorflow as tf

from kvae.errors import ConfigError
from kvae.models.vqvae.code_prior import CodeDistribution, PixelCNNCodePrior
from kvae.models.vqvae.quantize import VectorQuantizedPosterior, perplexity
from kvae.core.model import VariationalModel
from kvae.core.step import unless_skipped
from kvae.core.terms import LatentGroup, Terms


@keras.saving.register_keras_serializable(package="kvae")
class VQVAE(VariationalModel):
    """VQ-VAE with a PixelCNN prior over its code indices, fitted after training.

    Args:
      grid: the code grid (H, W); the encoder emits H W vectors of size embedding_dim (latent_dim = H W D).
      embedding_dim: D, the size of each code vector and codebook entry.
      num_embeddings: K, the number of codebook entries.
      commitment: the commitment weight (0.25 in the paper).
      codebook: ``ema`` (moving-average codebook, the paper's Appendix A.1) or ``loss`` (the codebook loss).
      decay: the moving averages' decay gamma (0.99 in the paper).
      restart_threshold: with ``codebook="ema"``, an entry whose moving count falls below this
        restarts at a random code vector of the batch (0: never, as the paper).
      prior_layers: masked convolution layers of the PixelCNN prior over the indices.
      prior_filters: filters per layer of that PixelCNN.
    """

    fixed_options = ("latent_dim", "beta", "posterior", "prior", "analytic_kl", "free_bits_per_dim",
                     "free_bits_total", "kl_warmup_steps", "objective", "density", "density_components")

    def __init__(self, input_shape, grid=(4, 4), embedding_dim=8, num_embeddings=64, commitment=0.25,
                 codebook="ema", decay=0.99, restart_threshold=0.0, prior_layers=4, prior_filters=32, **kwargs):
        grid = tuple(int(g) for g in grid)
        if len(grid) != 2 or min(grid) < 1:
            raise ConfigError(f"grid must be two positive sizes (H, W), got {grid}")
        latent_dim = grid[0] * grid[1] * int(embedding_dim)
        if kwargs.get("latent_dim", latent_dim) != latent_dim:
            raise ConfigError(f"a VQ-VAE's latent_dim is H W D = {latent_dim}; set grid and embedding_dim instead")
        kwargs["latent_dim"] = latent_dim
        kwargs.setdefault("posterior", VectorQuantizedPosterior(latent_dim, num_embeddings, embedding_dim,
                                                                update=codebook, decay=decay,
                                                                restart_threshold=restart_threshold,
                                                                name="posterior"))
        kwargs.setdefault("prior", PixelCNNCodePrior(grid, num_embeddings, num_layers=prior_layers,
                                                     filters=prior_filters, name="prior"))
        kwargs["beta"] = 0.0
        super().__init__(input_shape, **kwargs)
        self.commitment = float(commitment)
        self.commitment_tracker = keras.metrics.Mean(name="commitment")
        self.perplexity_tracker = keras.metrics.Mean(name="perplexity")
        self._init_args.update(dict(grid=list(grid), embedding_dim=int(embedding_dim),
                                    num_embeddings=int(num_embeddings), commitment=self.commitment,
                                    codebook=codebook, decay=float(decay),
                                    restart_threshold=float(restart_threshold), prior_layers=int(prior_layers),
                                    prior_filters=int(prior_filters)))

    @property
    def num_embeddings(self):
        return self.posterior.num_embeddings

    @property
    def metrics(self):
        return [*super().metrics, self.commitment_tracker, self.perplexity_tracker]

    extra_terms = ("z_e", "codes")

    def compute_terms(self, x, y=None, training=False, seed=None):
        """The base terms, with z the quantised code, ``z_e``, ``codes`` [B, H W] (int32) and the KL
        -log p(k(x)) under the code prior."""
        x = tf.cast(x, tf.float32)
        params = self.encode_params(x, y, training=training)
        z, z_e, codes = params
        codes = tf.cast(codes, tf.int32)
        px = self.decode(z, y, training=training)
        uniform = tf.fill(tf.shape(codes)[:1], float(self.posterior.positions * np.log(self.num_embeddings)))
        # -log p(k): the constant H W log K until the prior is fitted (no PixelCNN pass while training)
        kl = tf.cond(self.prior.fitted > 0, lambda: -self.prior.log_prob_codes(codes), lambda: uniform)
        group = LatentGroup("z", self.posterior.distribution(params), z, self.prior_distribution(), kl=kl)
        return Terms(x=x, y=y, groups=(group,), px=px, log_px_z=px.log_prob(x), seed=seed, training=training,
                     decode_params=self.decode_params, z_e=z_e, codes=codes)

    def prior_distribution(self):
        """p(z): index maps from the code prior looked up in the codebook (:class:`kvae.models.vqvae.code_prior.CodeDistribution`)."""
        return CodeDistribution(self.prior, self.posterior)

    def kl_divergence(self, q, z=None, prior=None):
        """-log p(k) of the codes of z (q is a point mass on k(x))."""
        return -self.prior_distribution().log_prob(q.distribution.loc if z is None else z)

    def commitment_loss(self, terms):
        """||z_e - sg(z_q)||^2 per example (the quantised value of ``z``)."""
        return tf.reduce_sum((terms["z_e"] - tf.stop_gradient(terms["z"])) ** 2, axis=-1)

    def bound_loss(self, terms, beta):
        loss = -terms["log_px_z"] + self.commitment * self.commitment_loss(terms)
        if self.posterior.quantizer.update == "loss":
            z_e = tf.reshape(terms["z_e"], [-1, self.posterior.positions, self.posterior.embedding_dim])
            loss = loss + self.posterior.quantizer.codebook_loss(z_e, terms["codes"])
        return loss

    def _update_metrics(self, terms, per_example, reg_values, beta, sample_weight, skipped=None):
        self.commitment_tracker.update_state(*unless_skipped(self.commitment_loss(terms), sample_weight, skipped))
        self.perplexity_tracker.update_state(*unless_skipped(perplexity(terms["codes"], self.num_embeddings),
                                                             None, skipped))
        return super()._update_metrics(terms, per_example, reg_values, beta, sample_weight, skipped)

    # -- codes
    def codes(self, x, y=None, batch_size=500):
        """Code index maps [N, H W] (int32 numpy) of the images x."""
        out = []
        for start in range(0, len(x), batch_size):
            yb = None if y is None else y[start:start + batch_size]
            out.append(self.encode_params(tf.cast(x[start:start + batch_size], tf.float32), yb)[2].numpy())
        return np.concatenate(out).astype(np.int32)

    def codebook_usage(self, x, y=None):
        """{"perplexity": exp(entropy) of the code usage over x, "dead_codes": entries no code of x
        uses, "num_embeddings": K}."""
        codes = self.codes(x, y)
        return {"perplexity": float(perplexity(codes, self.num_embeddings)),
                "dead_codes": int(self.num_embeddings - len(np.unique(codes))),
                "num_embeddings": int(self.num_embeddings)}

    def fit_prior(self, x, y=None, seed=0, epochs=None, batch_size=None, lr=None, verbose=False):
        """Fit the PixelCNN prior to the codes of x (:meth:`kvae.models.vqvae.code_prior.PixelCNNCodePrior.fit`)."""
        return self.prior.fit(self.codes(x, y), seed=seed, epochs=epochs, batch_size=batch_size, lr=lr,
                              verbose=verbose)
