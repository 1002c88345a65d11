"""A synthetic kvae bundle whose ONNX graphs echo their inputs, written with onnx.helper (no TensorFlow).

Each endpoint's first output is every input flattened per example and concatenated in the manifest's
order, ``[N, sum of sizes]`` (log_prob's eps [K, N, D] is transposed to [N, K, D] first); its second
output, where the real endpoint has one, is the negative of the first.  So what the runtime fed, and
in which order, is read back exactly from what it returns: the plumbing of kvae_serve is tested
independently of any model.
"""
import hashlib
import json
import os

import onnx
from onnx import TensorProto, helper

OPSET = 17
_DTYPES = {"float32": TensorProto.FLOAT, "int32": TensorProto.INT32}
_OUTPUTS = {"encode": ("loc", "scale"), "decode": ("probs", "logits"), "reconstruct": ("images",),
            "sample": ("images",), "sample_density": ("images",), "log_prob": ("log_prob",)}


def endpoint_inputs(input_shape, latent_dim, conditional, needs_uniform, density):
    """The input specs of kvae.export's endpoints: ``{endpoint: [(name, shape, dtype)]}``."""
    x = ("x", [None, *input_shape], "float32")
    eps = ("eps", [None, latent_dim], "float32")
    labels = [("labels", [None], "int32")] if conditional else []
    uniform = [("uniform", [None, *input_shape], "float32")] if needs_uniform else []
    table = {"encode": [x] + labels, "decode": [("z", [None, latent_dim], "float32")] + labels,
             "reconstruct": [x, eps] + labels + uniform, "sample": [eps] + labels + uniform,
             "log_prob": [x, ("eps", [None, None, latent_dim], "float32")] + labels}
    if density:
        table["sample_density"] = [eps, ("component_uniform", [None], "float32")] + labels + uniform
    return table


def _echo_graph(endpoint, inputs):
    nodes, parts = [], []
    for name, shape, dtype in inputs:
        source = name
        if endpoint == "log_prob" and name == "eps":
            nodes.append(helper.make_node("Transpose", [name], ["eps_nkd"], perm=[1, 0, 2]))
            source = "eps_nkd"
        if dtype != "float32":
            nodes.append(helper.make_node("Cast", [source], [f"{name}_float"], to=TensorProto.FLOAT))
            source = f"{name}_float"
        nodes.append(helper.make_node("Flatten", [source], [f"{name}_flat"], axis=1))
        parts.append(f"{name}_flat")
    names = _OUTPUTS[endpoint]
    nodes.append(helper.make_node("Concat", parts, ["echo:0"], axis=1))
    outputs = [helper.make_tensor_value_info("echo:0", TensorProto.FLOAT, [None, None])]
    if len(names) == 2:
        nodes.append(helper.make_node("Neg", ["echo:0"], ["negated:0"]))
        outputs.append(helper.make_tensor_value_info("negated:0", TensorProto.FLOAT, [None, None]))
    graph = helper.make_graph(
        nodes, endpoint, [helper.make_tensor_value_info(n, _DTYPES[d], s) for n, s, d in inputs], outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return model.SerializeToString(), [o.name for o in outputs]


def write_echo_bundle(path, input_shape=(2, 2, 1), latent_dim=3, num_classes=None, needs_uniform=False,
                      density=False):
    """Write the echo bundle to ``path``; returns the path."""
    os.makedirs(os.path.join(path, "onnx"), exist_ok=True)
    endpoints, files = {}, {}
    for endpoint, inputs in endpoint_inputs(input_shape, latent_dim, num_classes is not None, needs_uniform,
                                            density).items():
        content, onnx_names = _echo_graph(endpoint, inputs)
        rel = f"onnx/{endpoint}.onnx"
        with open(os.path.join(path, rel), "wb") as f:
            f.write(content)
        files[rel] = hashlib.sha256(content).hexdigest()
        endpoints[endpoint] = {
            "onnx": rel,
            "inputs": [{"name": n, "shape": s, "dtype": d} for n, s, d in inputs],
            "outputs": [{"name": n, "onnx_name": o} for n, o in zip(_OUTPUTS[endpoint], onnx_names)]}
    manifest = {"format": "kvae-bundle/1", "endpoints": endpoints, "files": files,
                "model": {"class": "Echo", "input_shape": list(input_shape), "latent_dim": latent_dim,
                          "num_classes": num_classes, "needs_uniform": needs_uniform}}
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return seal(path)


def seal(path, key=None):
    """Write ``bundle.sha256`` (and with ``key`` ``bundle.hmac``) over ``path``/manifest.json's bytes,
    in sha256sum's format, as ``kvae export`` does; returns the path."""
    import hmac

    with open(os.path.join(path, "manifest.json"), "rb") as f:
        content = f.read()
    with open(os.path.join(path, "bundle.sha256"), "w") as f:
        f.write(f"{hashlib.sha256(content).hexdigest()}  manifest.json\n")
    if key is not None:
        with open(os.path.join(path, "bundle.hmac"), "w") as f:
            f.write(f"{hmac.new(key, content, hashlib.sha256).hexdigest()}  manifest.json\n")
    return path
