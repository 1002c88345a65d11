"""Where the time goes: run a function under the TensorFlow profiler and sum the CPU time of the
TensorFlow ops it executed, by op type and by layer (the op's name scope).

The profiler writes an XSpace protobuf (``*.xplane.pb``); on the host plane, the executor threads
hold one event per op executed, named ``"scope/.../name:Type"``.  Container ops (function calls, loops,
conditionals) enclose other ops and are left out, so the sums are the ops' own times.  Ops run
on several threads at once, so the total can exceed the wall time; shares are of the total.
"""
import collections
import glob
import os
import tempfile

CONTAINERS = {"PartitionedCall", "StatefulPartitionedCall", "While", "StatelessWhile", "If", "StatelessIf",
              "__inference", "Case"}


def _xspace(logdir):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)
    if not files:
        raise RuntimeError(f"the profiler wrote no .xplane.pb under {logdir}")
    space = xplane_pb2.XSpace()
    with open(files[-1], "rb") as f:
        space.ParseFromString(f.read())
    return space


def op_times(space):
    """{(op_type, scope): total microseconds} over the host planes of an XSpace."""
    totals = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:"):
            continue
        for line in plane.lines:
            if line.name == "python":  # the Python thread's events enclose the ops (eager calls)
                continue
            for event in line.events:
                meta = plane.event_metadata.get(event.metadata_id)
                tf_op = meta.name if meta else ""
                if ":" not in tf_op or " " in tf_op or "::" in tf_op:  # ops are "scope/name:Type"; other events are not
                    continue
                name, op_type = tf_op.rsplit(":", 1)
                if op_type in CONTAINERS or op_type.startswith("__inference"):
                    continue
                scope = name.split("/")[0] if "/" in name else "(top level)"
                totals[(op_type, scope)] += event.duration_ps / 1e6
    return totals


def profile(fn, repeats=3, logdir=None, top=12):
    """Run ``fn()`` ``repeats`` times under the profiler (after one untimed call); return the top op
    types and scopes by CPU time, with their shares."""
    import tensorflow as tf

    fn()
    logdir = logdir or tempfile.mkdtemp(prefix="kvae_profile_")
    tf.profiler.experimental.start(logdir)
    try:
        for _ in range(repeats):
            fn()
    finally:
        tf.profiler.experimental.stop()
    totals = op_times(_xspace(logdir))
    total = sum(totals.values()) or 1.0
    by_type, by_scope = collections.Counter(), collections.Counter()
    for (op_type, scope), us in totals.items():
        by_type[op_type] += us
        by_scope[scope] += us
    return {
        "total_op_ms_per_call": total / 1e3 / repeats,
        "by_op_type": [{"op": k, "share": v / total, "ms_per_call": v / 1e3 / repeats}
                       for k, v in by_type.most_common(top)],
        "by_scope": [{"scope": k, "share": v / total, "ms_per_call": v / 1e3 / repeats}
                     for k, v in by_scope.most_common(top)],
    }
