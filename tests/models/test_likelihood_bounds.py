"""The importance-sampled log-likelihood of every model family is a bound that tightens with k
(Burda et al. 2016): E[log p̂_1(x)] is the ELBO, and E[log p̂_k(x)] is non-decreasing in k.  Checked per
family on the bundled digits (1 epoch of training), paired by example, within Monte-Carlo error:

* mean(log p̂_1 - ELBO) within 4 standard errors of 0 (the ELBO averaged over 16 draws per example);
* mean(log p̂_10 - log p̂_1) and mean(log p̂_100 - log p̂_10) >= -3 standard errors, and the sum > 0;
* mean(log p̂_100) >= mean(ELBO).

A wrong log q, log p(z) or log p(x|z) in the importance weights, or a wrong KL in the ELBO, moves the
first check by far more than its error; a log-mean-exp over the wrong axis or count breaks the second."""
import numpy as np
import pytest
import tensorflow as tf

import kvae

FAMILIES = {
    "gaussian (VAE)": lambda s: kvae.VAE(input_shape=s, latent_dim=3, hidden=(32,), seed=0),
    "iwae objective": lambda s: kvae.IWAE(input_shape=s, latent_dim=3, hidden=(32,), num_samples=4, seed=0),
    "vamp prior": lambda s: kvae.VampVAE(input_shape=s, latent_dim=3, hidden=(32,), num_components=5, seed=0),
    "planar/radial flows": lambda s: kvae.LinNFVAE(input_shape=s, latent_dim=3, hidden=(32,), flows="planar,radial",
                                                   seed=0),
    "iaf posterior": lambda s: kvae.VAE(input_shape=s, latent_dim=3, hidden=(32,), seed=0,
                                        posterior=kvae.parts.posteriors.IAFPosterior(3, num_steps=1, hidden_units=(8,),
                                                                                     context_size=4)),
    "flow prior (VLAE)": lambda s: kvae.VLAE(input_shape=s, latent_dim=3, network="mlp", hidden=(32,), flow_steps=1,
                                              flow_hidden=(8,), seed=0),
    "hamiltonian (HVAE)": lambda s: kvae.HVAE(input_shape=s, latent_dim=3, hidden=(32,), num_leapfrog=2,
                                              step_size=0.05, seed=0),
    "poincare ball": lambda s: kvae.PoincareVAE(input_shape=s, latent_dim=2, hidden=(32,), seed=0),
    "hypersphere (SVAE)": lambda s: kvae.SVAE(input_shape=s, latent_dim=4, hidden=(32,), seed=0),
    "hierarchy (LadderVAE)": lambda s: kvae.LadderVAE(input_shape=s, groups=2, channels=8, latent_channels=2,
                                                      blocks=1, seed=0),
}


@pytest.fixture(scope="module")
def digits_binary():
    x, _ = kvae.data.load("digits", "train").arrays()
    return (np.asarray(x) > 0.5).astype("float32")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_log_likelihood_is_the_elbo_at_k1_and_tightens_with_k(family, digits_binary):
    x = digits_binary
    model = FAMILIES[family](x.shape[1:])
    model.compile(optimizer="adam")
    model.fit(x[:400], batch_size=50, epochs=1, verbose=0)
    xe = x[400:460]
    elbo = np.mean([(lambda t: (t["log_px_z"] - t["kl"]).numpy())(model.compute_terms(xe, seed=tf.constant([s, 7])))
                    for s in range(16)], axis=0)
    ll = {k: model.log_likelihood(xe, k=k, seed=k + 11, batch_size=60).numpy().astype(np.float64) for k in (1, 10, 100)}
    assert all(np.all(np.isfinite(v)) for v in ll.values())

    def mean_and_se(d):
        return d.mean(), d.std(ddof=1) / np.sqrt(len(d))

    m, se = mean_and_se(ll[1] - elbo)
    assert abs(m) <= 4 * se + 1e-3, (family, "log p̂_1 - ELBO", m, se)
    rises = []
    for lo, hi in ((1, 10), (10, 100)):
        m, se = mean_and_se(ll[hi] - ll[lo])
        assert m >= -3 * se, (family, f"log p̂_{hi} - log p̂_{lo}", m, se)
        rises.append(m)
    assert sum(rises) > 0, (family, rises)
    assert ll[100].mean() >= elbo.mean(), (family, ll[100].mean(), elbo.mean())
