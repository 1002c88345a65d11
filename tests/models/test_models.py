"""Every model of the core issue runs the shared battery."""
import keras

import kvae
from battery import ModelBattery


class TestVAE(ModelBattery):
    def make_model(self):
        return kvae.VAE(input_shape=self.input_shape, latent_dim=4, hidden=(32, 32), seed=1)


class TestVAEConvGaussian(ModelBattery):
    def make_model(self):
        return kvae.VAE(input_shape=self.input_shape, latent_dim=3, network="conv", hidden=(16,),
                        decoder="gaussian", seed=2)


class TestBetaVAEWithWarmup(ModelBattery):

    def make_model(self):
        return kvae.BetaVAE(input_shape=self.input_shape, latent_dim=4, hidden=(32,),
                            beta=kvae.parts.schedules.LinearWarmup(target=4.0, warmup_steps=10), seed=3)


class TestConditionalVAE(ModelBattery):
    labelled = True

    def make_model(self):
        return kvae.ConditionalVAE(input_shape=self.input_shape, num_classes=10, latent_dim=4, hidden=(32,), seed=4)


class TestConditionalConvVAE(ModelBattery):
    labelled = True

    def make_model(self):
        return kvae.ConditionalVAE(input_shape=self.input_shape, num_classes=10, latent_dim=2, network="conv",
                                   hidden=(16,), seed=5)


class TestUserNetworksAndRegularizer(ModelBattery):
    """User Keras models as encoder/decoder networks, a predicted-scale Gaussian and a regulariser."""

    def make_model(self):
        enc = keras.Sequential([keras.Input(self.input_shape), keras.layers.Flatten(),
                                keras.layers.Dense(24, activation="tanh")])
        dec = keras.Sequential([keras.Input((5,)), keras.layers.Dense(24, activation="tanh")])
        return kvae.VAE(input_shape=self.input_shape, latent_dim=5, encoder_network=enc, decoder_network=dec,
                        decoder=kvae.parts.likelihoods.GaussianLikelihood(self.input_shape, scale="predicted"),
                        regularizers=[kvae.parts.regularizers.LatentL2(0.1)], seed=6)


class TestIAFPosteriorMAFPrior(ModelBattery):
    def make_model(self):
        return kvae.VAE(input_shape=self.input_shape, latent_dim=4, hidden=(32,),
                        posterior=kvae.parts.posteriors.IAFPosterior(4, num_steps=2, hidden_units=(16,), context_size=8),
                        prior=kvae.parts.priors.FlowPrior(4, num_steps=2, hidden_units=(16,)), seed=7)


class TestIAFPrior(ModelBattery):
    def make_model(self):
        return kvae.VAE(input_shape=self.input_shape, latent_dim=3, hidden=(16,),
                        prior=kvae.parts.priors.FlowPrior(3, num_steps=2, hidden_units=(8,), kind="iaf"), seed=8)


class TestPixelCNNDecoder(ModelBattery):
    def make_model(self):
        return kvae.VAE(input_shape=self.input_shape, latent_dim=3, hidden=(16,),
                        decoder=kvae.parts.likelihoods.PixelCNNLikelihood(self.input_shape, num_layers=2, filters=8), seed=9)


class TestVAEResNet(ModelBattery):
    def make_model(self):
        return kvae.VAE(input_shape=self.input_shape, latent_dim=3, network="resnet", seed=41)


class TestVLAE(ModelBattery):  # its default ResNet encoder and input conditioning
    def make_model(self):
        return kvae.VLAE(input_shape=self.input_shape, latent_dim=3, flow_steps=2, flow_hidden=(8,),
                         pixelcnn_layers=2, pixelcnn_filters=4, seed=10)


class TestVLAEWithIAFPosterior(ModelBattery):  # MLP encoder, every-layer conditioning (the pretrained VLAE's)
    def make_model(self):
        return kvae.VLAE(input_shape=self.input_shape, latent_dim=3, network="mlp", hidden=(16,), flow_steps=1,
                         flow_hidden=(8,), conditioning="every_layer",
                         posterior=kvae.parts.posteriors.IAFPosterior(3, num_steps=1, hidden_units=(8,), context_size=4),
                         pixelcnn_layers=2, pixelcnn_filters=4, seed=11)


class TestInfoVAEMMD(ModelBattery):

    def make_model(self):
        return kvae.InfoVAE(input_shape=self.input_shape, latent_dim=3, hidden=(16,), kernel="imq",
                            bandwidths=(0.5, 1.0), seed=12)


class TestInfoVAEAdversarial(ModelBattery):

    def make_model(self):
        return kvae.InfoVAE(input_shape=self.input_shape, latent_dim=3, hidden=(16,), alpha=0.0, lambda_=2.0,
                            divergence="adversarial", seed=13)


class TestFactorVAE(ModelBattery):

    def make_model(self):
        return kvae.FactorVAE(input_shape=self.input_shape, latent_dim=3, hidden=(16,), discriminator_hidden=(16,),
                              seed=14)


class TestMAE(ModelBattery):

    def make_model(self):
        return kvae.MAE(input_shape=self.input_shape, latent_dim=3, hidden=(16,), free_bits_total=0.05, seed=15)


class TestRAEGradientPenalty(ModelBattery):

    def make_model(self):
        return kvae.RAE(input_shape=self.input_shape, latent_dim=3, hidden=(16,), regularization="gp",
                        reg_weight=0.1, seed=16)


class TestRAESpectralNorm(ModelBattery):
    def make_model(self):
        return kvae.RAE(input_shape=self.input_shape, latent_dim=3, hidden=(16,), regularization="sn", seed=17)


class TestAE(ModelBattery):
    def make_model(self):
        return kvae.AE(input_shape=self.input_shape, latent_dim=3, hidden=(16,), seed=18)


class TestBetaTCVAE(ModelBattery):

    def make_model(self):
        return kvae.BetaTCVAE(input_shape=self.input_shape, latent_dim=3, hidden=(16,), dataset_size=1000, seed=19)


class TestIWAE(ModelBattery):

    def make_model(self):
        return kvae.IWAE(input_shape=self.input_shape, latent_dim=4, hidden=(32,), num_samples=3, seed=21)


class TestMIWAEWithIAFPosterior(ModelBattery):

    def make_model(self):
        return kvae.MIWAE(input_shape=self.input_shape, latent_dim=4, hidden=(32,), num_samples=2, num_groups=2,
                          posterior=kvae.parts.posteriors.IAFPosterior(4, num_steps=1, hidden_units=(8,), context_size=4),
                          seed=22)


class TestCIWAE(ModelBattery):

    def make_model(self):
        return kvae.CIWAE(input_shape=self.input_shape, latent_dim=4, hidden=(32,), num_samples=3, seed=23)


class TestPIWAEConditional(ModelBattery):
    labelled = True

    def make_model(self):
        return kvae.PIWAE(input_shape=self.input_shape, num_classes=10, latent_dim=4, hidden=(32,), num_samples=2,
                          num_groups=2, seed=24)


class TestVLAEWithIWAEObjective(ModelBattery):

    def make_model(self):
        return kvae.VLAE(input_shape=self.input_shape, latent_dim=3, hidden=(16,), flow_steps=1, flow_hidden=(8,),
                         pixelcnn_layers=2, pixelcnn_filters=4, objective=kvae.parts.objectives.IWAEBound(2), seed=25)


class TestWAEMMD(ModelBattery):

    def make_model(self):
        return kvae.WAE(input_shape=self.input_shape, latent_dim=3, hidden=(32,), seed=26)


class TestAnnealedCapacityBetaVAE(ModelBattery):

    def make_model(self):
        return kvae.AnnealedCapacityBetaVAE(input_shape=self.input_shape, latent_dim=4, hidden=(32,), gamma=10.0,
                                           capacity=5.0, capacity_steps=10, seed=27)


class TestVampPrior(ModelBattery):
    def make_model(self):
        return kvae.VAE(input_shape=self.input_shape, latent_dim=3, hidden=(16,),
                        prior=kvae.parts.priors.VampPrior(3, num_components=7), seed=28)


class TestPlanarRadialPosterior(ModelBattery):
    def make_model(self):
        return kvae.LinNFVAE(input_shape=self.input_shape, latent_dim=3, hidden=(16,), flows="planar,radial,planar",
                             seed=29)


class TestAdversarialAE(ModelBattery):

    def make_model(self):
        return kvae.AdversarialAE(input_shape=self.input_shape, latent_dim=3, hidden=(16,), discriminator_hidden=(16,),
                                  discriminator_lr=0.01, seed=30)


class TestMSSSIMVAE(ModelBattery):
    def make_model(self):
        return kvae.MSSSIMVAE(input_shape=self.input_shape, latent_dim=3, hidden=(16,), beta=0.01, seed=31)


class TestIAFMixedWithPlanarRadial(ModelBattery):
    def make_model(self):
        from kvae.parts.posteriors import PlanarRadialPosterior

        return kvae.VAE(input_shape=self.input_shape, latent_dim=3, hidden=(16,), seed=32,
                        posterior=PlanarRadialPosterior(3, "iaf,planar,iaf,radial", iaf_hidden=(12,), context_size=4,
                                                        name="posterior"))


class TestHVAE(ModelBattery):
    def make_model(self):
        return kvae.HVAE(input_shape=self.input_shape, latent_dim=3, hidden=(16,), num_leapfrog=2, step_size=0.05,
                         learn_step_size=True, seed=33)


class TestRHVAE(ModelBattery):

    def make_model(self):
        return kvae.RHVAE(input_shape=self.input_shape, latent_dim=2, hidden=(16,), num_leapfrog=1, fixed_point_steps=1,
                          step_size=0.05, metric_hidden=(8,), metric_points=16, seed=38)


class TestVQVAE(ModelBattery):
    def make_model(self):
        return kvae.VQVAE(input_shape=self.input_shape, grid=(2, 2), embedding_dim=2, num_embeddings=8, hidden=(16,),
                          prior_layers=2, prior_filters=8, seed=34)


class TestVAEGAN(ModelBattery):

    def make_model(self):
        return kvae.VAEGAN(input_shape=self.input_shape, latent_dim=3, hidden=(16,), discriminator_hidden=(16, 8),
                           discriminator_lr=0.01, seed=35)


class TestPoincareVAE(ModelBattery):
    def make_model(self):
        return kvae.PoincareVAE(input_shape=self.input_shape, latent_dim=2, hidden=(16,), curvature=0.7, seed=36)


class TestSVAE(ModelBattery):
    def make_model(self):
        return kvae.SVAE(input_shape=self.input_shape, latent_dim=4, hidden=(16,), seed=37)


class TestLadderVAE(ModelBattery):  # two spatial groups, precision-weighted merge
    def make_model(self):
        return kvae.LadderVAE(input_shape=self.input_shape, groups=2, channels=8, latent_channels=2, blocks=1, seed=0)
