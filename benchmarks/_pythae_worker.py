"""The pythae side of ``peer_pythae.py``; runs inside the peer virtual environment (PyTorch and
pythae, no TensorFlow, no kvae).  Prints one JSON line.

The MLP 784-500-500-50 as pythae encoder/decoder modules; trained with torch.optim.Adam in a
plain loop over pythae's ``model(inputs).loss`` (pythae's own trainer adds logging and
checkpointing on top: this loop is the lower bound of its cost); NLL with pythae's ``get_nll``.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from pythae.models import (INFOVAE_MMD, IWAE, RAE_L2, VAE, VQVAE, BetaVAE, BetaVAEConfig, INFOVAE_MMD_Config,
                           IWAEConfig, RAE_L2_Config, VAEConfig, VQVAEConfig)
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _peer_metrics import bernoulli_error  # noqa: E402


class Encoder(BaseEncoder):
    def __init__(self, latent_dim, hidden, deterministic=False):
        super().__init__()
        self.deterministic = deterministic
        layers, width = [torch.nn.Flatten()], 784
        for h in hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
            width = h
        self.body = torch.nn.Sequential(*layers)
        self.mu = torch.nn.Linear(width, latent_dim)
        if not deterministic:
            self.log_var = torch.nn.Linear(width, latent_dim)

    def forward(self, x):
        h = self.body(x)
        if self.deterministic:
            return ModelOutput(embedding=self.mu(h))
        return ModelOutput(embedding=self.mu(h), log_covariance=self.log_var(h))


class Decoder(BaseDecoder):
    def __init__(self, latent_dim, hidden):
        super().__init__()
        layers, width = [], latent_dim
        for h in reversed(hidden):
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
            width = h
        self.body = torch.nn.Sequential(*layers, torch.nn.Linear(width, 784), torch.nn.Sigmoid())

    def forward(self, z):
        return ModelOutput(reconstruction=self.body(z).reshape(-1, 1, 28, 28))


class BernoulliRAE_L2(RAE_L2):
    """pythae's RAE_L2 with its squared-error reconstruction term replaced by the Bernoulli one
    (summed binary cross-entropy, as pythae's VAE computes it), so both libraries train the same
    objective on binary images; nothing else changes (its latent term 1/2 ||z||^2 stays)."""

    def loss_function(self, recon_x, x, z):
        recon = F.binary_cross_entropy(recon_x.reshape(x.shape[0], -1), x.reshape(x.shape[0], -1),
                                       reduction="none").sum(dim=-1)
        embedding = 0.5 * torch.linalg.norm(z, dim=-1) ** 2
        return ((recon + self.model_config.embedding_weight * embedding).mean(dim=0), recon.mean(dim=0),
                embedding.mean(dim=0))


class BernoulliVQVAE(VQVAE):
    """pythae's VQVAE with its squared-error reconstruction replaced by the summed binary cross-entropy
    (its VQ loss unchanged), so both libraries train the same objective on binary images."""

    def loss_function(self, recon_x, x, quantizer_output):
        recon = F.binary_cross_entropy(recon_x.reshape(x.shape[0], -1), x.reshape(x.shape[0], -1),
                                       reduction="none").sum(dim=-1)
        vq_loss = quantizer_output.loss
        return (recon + vq_loss).mean(dim=0), recon.mean(dim=0), vq_loss.mean(dim=0)


def build(name, latent_dim, hidden, beta, num_samples):
    common = dict(input_dim=(1, 28, 28), latent_dim=latent_dim, reconstruction_loss="bce")
    if name == "rae":
        enc, dec = Encoder(latent_dim, hidden, deterministic=True), Decoder(latent_dim, hidden)
        return BernoulliRAE_L2(RAE_L2_Config(input_dim=(1, 28, 28), latent_dim=latent_dim, embedding_weight=1e-4,
                                             reg_weight=1e-7), encoder=enc, decoder=dec)
    if name == "vq-vae":  # the MLP VQ-VAE: pythae quantises each of the 50 numbers among 512 scalar entries (EMA)
        enc, dec = Encoder(latent_dim, hidden, deterministic=True), Decoder(latent_dim, hidden)
        return BernoulliVQVAE(VQVAEConfig(input_dim=(1, 28, 28), latent_dim=latent_dim, num_embeddings=512,
                                          commitment_loss_factor=0.25, use_ema=True, decay=0.99),
                              encoder=enc, decoder=dec)
    enc, dec = Encoder(latent_dim, hidden), Decoder(latent_dim, hidden)
    if name == "vae":
        return VAE(VAEConfig(**common), encoder=enc, decoder=dec)
    if name == "beta-vae":
        return BetaVAE(BetaVAEConfig(beta=beta, **common), encoder=enc, decoder=dec)
    if name == "iwae":
        return IWAE(IWAEConfig(number_samples=num_samples, **common), encoder=enc, decoder=dec)
    if name == "infovae":  # the MMD-VAE: alpha = 1 (no KL), lambda = 1000, one RBF kernel exp(-d^2 / 2D)
        return INFOVAE_MMD(INFOVAE_MMD_Config(alpha=1.0, lbd=1000.0, kernel_choice="rbf", kernel_bandwidth=1.0,
                                              **common), encoder=enc, decoder=dec)
    raise SystemExit(f"unknown model {name}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--latent-dim", type=int, default=50)
    p.add_argument("--hidden", default="500,500")
    p.add_argument("--beta", type=float, default=4.0)
    p.add_argument("--num-samples", type=int, default=5)
    p.add_argument("--k", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count())
    with np.load(args.data) as d:
        train = torch.tensor(d["train"], dtype=torch.float32).permute(0, 3, 1, 2).contiguous()
        valid = torch.tensor(d["valid"], dtype=torch.float32).permute(0, 3, 1, 2).contiguous()
    model = build(args.model, args.latent_dim, [int(h) for h in args.hidden.split(",")], args.beta,
                  args.num_samples)
    if args.model == "rae":  # pythae's training pipeline: the decoder's optimizer decays by reg_weight
        opt = torch.optim.Adam([{"params": model.encoder.parameters()},
                                {"params": model.decoder.parameters(), "weight_decay": model.model_config.reg_weight}],
                               lr=args.lr)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    rng = np.random.RandomState(args.seed)
    steps, epochs = [], []
    model.train()
    for _ in range(args.epochs):
        order = torch.tensor(rng.permutation(len(train)))
        start = time.perf_counter()
        for i in range(0, len(train) - args.batch_size + 1, args.batch_size):
            t = time.perf_counter()
            out = model({"data": train[order[i:i + args.batch_size]]})
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            steps.append(time.perf_counter() - t)
        epochs.append(time.perf_counter() - start)
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        deterministic = args.model in ("rae", "vq-vae")
        nll = None if deterministic else float(-model.get_nll(valid, n_samples=args.k, batch_size=100))
        nll_seconds = time.perf_counter() - start
        if args.model == "vq-vae":  # decoded from the quantised code
            mean = model({"data": valid}).recon_x.reshape(len(valid), -1).numpy()
        else:
            mean = model.decoder(model.encoder(valid).embedding)["reconstruction"].reshape(len(valid), -1).numpy()
    print(json.dumps({"library": "pythae", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "step_seconds": steps, "epoch_seconds": epochs, "nll": nll, "nll_seconds": nll_seconds,
                      "rec_bce": bernoulli_error(valid.reshape(len(valid), -1).numpy(), mean)}))


if __name__ == "__main__":
    main()
