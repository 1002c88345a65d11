"""The KServe / Triton v2 HTTP inference protocol beside the JSON API: every endpoint of the bundle is
a model of that name taking its raw inputs (the noise included) as typed tensors, in JSON or with
the binary tensor data extension (what ``tritonclient.http`` sends by default).

* ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready`` (200 once every session was created and run once)
* ``GET /v2/models/{name}[/versions/1]``, ``.../ready``, ``.../config``
* ``POST /v2/models/{name}[/versions/1]/infer``
"""
import json
import math

import numpy as np
from starlette.responses import Response
from starlette.routing import Route

from . import __version__, codec
from .bundle import LOG_PROB_CHUNK, BundleError
from .limits import RequestError

DTYPES = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "INT8": "i1", "UINT8": "u1",
          "INT16": "<i2", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8"}
SPEC_TYPES = {"float32": "FP32", "int32": "INT32"}
VERSION = "1"


def _shape(shape):
    return [-1 if d is None or isinstance(d, str) else int(d) for d in shape]


def metadata(bundle, name):
    """The KServe/Triton v2 model metadata of endpoint ``name``: its inputs and outputs with datatypes and shapes."""
    spec = bundle.manifest["endpoints"][name]
    session = bundle._session(name)
    graph = {o.name: o for o in session.get_outputs()}
    outputs = [{"name": o["name"], "datatype": "FP32", "shape": _shape(graph[f].shape)}
               for o, f in zip(spec["outputs"], bundle._fetch[name])]
    return {"name": name, "versions": [VERSION], "platform": "onnxruntime_onnx",
            "inputs": [{"name": i["name"], "datatype": SPEC_TYPES[i["dtype"]], "shape": _shape(i["shape"])}
                       for i in spec["inputs"]], "outputs": outputs}


def _tensor(item, binary, offset, service, endpoint):
    """One input tensor of an infer request as a numpy array; returns (name, array, new offset)."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise RequestError(400, "every input must be an object with a name")
    name, shape, datatype = item["name"], item.get("shape"), item.get("datatype")
    if not isinstance(datatype, str) or datatype not in DTYPES:
        raise RequestError(400, f"input {name[:50]!r}: unsupported datatype {str(datatype)[:20]!r}; use FP32 or INT32")
    if not isinstance(shape, list) or not 1 <= len(shape) <= 5 or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise RequestError(400, f"input {name[:50]!r}: shape must be a list of non-negative integers")
    rows = shape[1] if (endpoint == "log_prob" and name == "eps" and len(shape) > 1) else shape[0]
    size = math.prod(shape)  # Python ints: no int64 overflow or wrap-around to a small size
    if rows > service.max_samples:
        raise RequestError(400, f"input {name[:50]!r}: {rows} rows is over the limit of {service.max_samples}")
    if size > service.max_body:
        raise RequestError(413, f"input {name[:50]!r}: {size} elements is over this server's limit")
    if endpoint == "log_prob" and name == "eps" and shape[0] * rows > LOG_PROB_CHUNK:
        raise RequestError(400, f"log_prob: K x N = {shape[0] * rows} samples is over the v2 limit of "
                                f"{LOG_PROB_CHUNK} (one session run; POST /log_prob evaluates more in chunks)")
    dtype = np.dtype(DTYPES[datatype])
    parameters = item.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError(400, f"input {name[:50]!r}: parameters must be an object")
    if "binary_data_size" in parameters:
        n = parameters["binary_data_size"]
        if not isinstance(n, int) or isinstance(n, bool) or n != size * dtype.itemsize or offset + n > len(binary):
            raise RequestError(400, f"input {name[:50]!r}: binary_data_size must be {size * dtype.itemsize} bytes "
                                    "and within the body")
        return name, np.frombuffer(binary, dtype, size, offset).reshape(shape), offset + n
    data = item.get("data")
    if not isinstance(data, list):
        raise RequestError(400, f"input {name[:50]!r}: data must be a list (or use binary_data_size)")
    try:
        array = np.asarray(data)
    except (ValueError, TypeError):
        raise RequestError(400, f"input {name[:50]!r}: data is not a regular array") from None
    if array.size != size or array.dtype.kind not in ("iu" if dtype.kind in "iu" else "iuf"):
        raise RequestError(400, f"input {name[:50]!r}: data must be {size} {datatype} values for shape {shape}")
    return name, array.reshape(shape).astype(dtype), offset


def infer_path(path):
    """``(name, version)`` of an infer path (``/v2/models/{name}[/versions/{version}]/infer``, each part
    one non-empty path segment, as the routes match them), else None."""
    parts = path.split("/")
    if len(parts) == 5 and parts[:3] == ["", "v2", "models"] and parts[4] == "infer" and parts[3]:
        return parts[3], VERSION
    if (len(parts) == 7 and parts[:3] == ["", "v2", "models"] and parts[4] == "versions" and parts[6] == "infer"
            and parts[3] and parts[5]):
        return parts[3], parts[5]
    return None


async def answer_infer(service, name, version, scope, receive):
    """The answer to ``POST /v2/models/{name}[/versions/{version}]/infer`` (errors included), its body
    read from the ASGI ``receive``."""
    bundle = service.bundle

    async def work():
        if version != VERSION:
            raise RequestError(404, f"model {name[:100]!r} has only version {VERSION}")
        try:
            return await infer(service, scope, receive, name)
        except BundleError as err:
            raise RequestError(400, str(err)) from None

    return await service.answer(f"/v2/{name}" if name in bundle.endpoints else "/v2/unknown", work)


async def infer(service, scope, receive, name):
    """``POST /v2/models/{name}/infer``."""
    if name not in service.bundle.endpoints:
        raise RequestError(404, f"unknown model {name[:100]!r}; the models are {', '.join(service.bundle.endpoints)}")
    body, headers = await service.body(scope, receive, json_only=False)
    header_length = headers.get(b"inference-header-content-length")
    if header_length is not None:
        if not header_length.isdigit() or not header_length.isascii() or int(header_length[:15]) > len(body):
            raise RequestError(400, "Inference-Header-Content-Length must be digits within the body")
        head, binary = body[:int(header_length)], body[int(header_length):]
    else:
        head, binary = body, b""
    try:
        data = json.loads(head)
    except (ValueError, RecursionError) as err:
        raise RequestError(400, f"malformed JSON: {err}"[:300]) from None
    if not isinstance(data, dict) or not isinstance(data.get("inputs"), list):
        raise RequestError(400, "the request must be a JSON object with a list of inputs")
    arrays, offset = {}, 0
    for item in data["inputs"]:
        key, array, offset = _tensor(item, binary, offset, service, name)
        arrays[key] = array
    parameters, wanted = data.get("parameters") or {}, data.get("outputs")
    names = [o["name"] for o in service.bundle.manifest["endpoints"][name]["outputs"]]
    if not isinstance(parameters, dict):
        raise RequestError(400, "parameters must be an object")
    if wanted is not None and not (isinstance(wanted, list) and all(
            isinstance(o, dict) and isinstance(o.get("name"), str) and o["name"] in names
            and isinstance(o.get("parameters") or {}, dict) for o in wanted)):
        raise RequestError(400, f"outputs must be objects naming some of {', '.join(names)} "
                                "(with an object of parameters, if any)")
    binary_default = bool(parameters.get("binary_data_output", False))
    outputs = await service.infer(name, service.bundle.prepare(name, **arrays))
    if wanted is None:
        wanted = [{"name": o} for o in outputs]
    answer, blobs = {"model_name": name, "model_version": VERSION, "outputs": []}, []
    if isinstance(data.get("id"), str):
        answer["id"] = data["id"]
    for o in wanted:
        value = np.ascontiguousarray(outputs[o["name"]], np.float32)
        entry = {"name": o["name"], "datatype": "FP32", "shape": list(value.shape)}
        if (o.get("parameters") or {}).get("binary_data", binary_default):
            blobs.append(value.tobytes())
            entry["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            entry["data"] = value.ravel()
        answer["outputs"].append(entry)
    head = codec.dumps(answer)
    if not blobs:
        return Response(head, 200, media_type="application/json")
    return Response(head + b"".join(blobs), 200, {"Inference-Header-Content-Length": str(len(head))},
                    media_type="application/octet-stream")


def routes(service):
    """The v2 routes over ``service`` (a :class:`kvae_serve.app.Service`)."""
    from .app import json_response

    bundle = service.bundle

    def known(name):
        if name not in bundle.endpoints:
            return json_response(404, {"error": f"unknown model {name[:100]!r}; the models are "
                                                f"{', '.join(bundle.endpoints)}"})
        return None

    async def server(request):
        return json_response(200, {"name": "kvae-serve", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def live(request):
        return Response(b"", 200)

    async def ready(request):
        return Response(b"", 200 if service.ready else 503)

    async def model(request):
        name = request.path_params["name"]
        return known(name) or json_response(200, metadata(bundle, name))

    async def model_ready(request):
        return known(request.path_params["name"]) or Response(b"", 200 if service.ready else 503)

    async def config(request):
        name = request.path_params["name"]
        if known(name):
            return known(name)
        meta = metadata(bundle, name)
        return json_response(200, {"name": name, "platform": meta["platform"], "max_batch_size": service.max_samples,
                                   "input": [{"name": i["name"], "data_type": "TYPE_" + i["datatype"],
                                              "dims": i["shape"][1:]} for i in meta["inputs"]],
                                   "output": [{"name": o["name"], "data_type": "TYPE_FP32", "dims": o["shape"][1:]}
                                              for o in meta["outputs"]]})

    async def run(request):
        return await answer_infer(service, request.path_params["name"], request.path_params.get("version", VERSION),
                                  request.scope, request.receive)

    table = []
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        table += [Route(prefix, model, methods=["GET"]), Route(prefix + "/ready", model_ready, methods=["GET"]),
                  Route(prefix + "/config", config, methods=["GET"]), Route(prefix + "/infer", run, methods=["POST"])]
    return [Route("/v2", server, methods=["GET"]), Route("/v2/health/live", live, methods=["GET"]),
            Route("/v2/health/ready", ready, methods=["GET"])] + table
