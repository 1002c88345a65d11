"""Train the LeNet whose features kvae.evaluation.sample_quality uses ("FID in a LeNet feature space").

Static binarised MNIST has no labels, so the targets are 20 k-means clusters (scikit-learn
MiniBatchKMeans on a 50-component PCA of the training images, seed 0).  Adam 1e-3, batch 128,
``--epochs`` epochs on the 50000 training images; the cluster accuracy on the validation split is
reported.  Writes kvae/evaluation/weights/lenet_binarized_mnist.weights.h5 and a JSON next to it.

    python apps/train_feature_lenet.py --data-dir ../shared/data --epochs 5
"""
import argparse
import json
import os
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--out", help="weights file (default: the one kvae ships)")
    args = p.parse_args(argv)

    import keras
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.decomposition import PCA

    from kvae.data import datasets as data
    from kvae.evaluation import sample_quality

    keras.utils.set_random_seed(0)
    train, _ = data.load("binarized_mnist", "train", args.data_dir).arrays()
    valid, _ = data.load("binarized_mnist", "valid", args.data_dir).arrays()
    pca = PCA(50, random_state=0).fit(train.reshape(len(train), -1))
    kmeans = MiniBatchKMeans(sample_quality.NUM_CLUSTERS, random_state=0, n_init=3, batch_size=4096)
    kmeans.fit(pca.transform(train.reshape(len(train), -1)))
    y_train = kmeans.predict(pca.transform(train.reshape(len(train), -1)))
    y_valid = kmeans.predict(pca.transform(valid.reshape(len(valid), -1)))
    model = sample_quality.lenet()
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    start = time.time()
    history = model.fit(train, y_train, batch_size=128, epochs=args.epochs, validation_data=(valid, y_valid),
                        verbose=2)
    out = args.out or sample_quality.WEIGHTS
    os.makedirs(os.path.dirname(out), exist_ok=True)
    model.save_weights(out)
    report = {"targets": f"{sample_quality.NUM_CLUSTERS} k-means clusters of a 50-component PCA (seed 0)",
              "epochs": args.epochs, "seconds": time.time() - start,
              "valid_cluster_accuracy": float(history.history["val_accuracy"][-1]),
              "train_cluster_accuracy": float(history.history["accuracy"][-1]),
              "command": "python apps/train_feature_lenet.py --data-dir ../shared/data --epochs %d" % args.epochs}
    with open(os.path.splitext(os.path.splitext(out)[0])[0] + ".json", "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
