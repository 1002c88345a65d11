"""Render ``benchmarks/results.json`` (written by ``python -m benchmarks``) as the Markdown tables
that docs/benchmarks.md carries between its ``<!-- results -->`` markers.

    python benchmarks/render_tables.py [benchmarks/results.json]

tests/test_benchmark_docs.py checks that the docs hold exactly this rendering of the committed JSON,
so every speed figure in the docs is one the entry point measured.
"""
import json
import os
import sys


HERE = os.path.dirname(os.path.abspath(__file__))


def _ms(seconds):
    return f"{seconds * 1e3:.1f} ms"


def _step(r):
    s = r["steps"]
    return f"{_ms(s['median'])} ({_ms(s['p10'])}–{_ms(s['p90'])}, n={s['n']})"


def render(report):
    m = report["machine"]
    lines = [f"Measured {report['date']} at commit `{report['commit'][:12]}` on {m.get('cpu_model')} "
             f"({m.get('usable_cpus', m.get('logical_cpus'))} usable cores, load average "
             f"{m.get('load_average_at_start', ['?'])[0]:.2f} at start), TensorFlow {m['tensorflow']}, "
             f"Keras {m['keras']}, oneDNN {'on' if m.get('onednn_enabled') else 'off'}"
             f"{' (quick smoke run: not for quoting)' if report.get('quick') else ''}. Steps: median "
             "(10th–90th percentile, number of steps) of steady-state steps, one step timed at a time, "
             "kvae and its baseline interleaved in the same process.", ""]
    b = report["benchmarks"]
    if "vlae_step" in b and "results" in b["vlae_step"]:
        v, r = b["vlae_step"], b["vlae_step"]["results"]
        lines += ["### VLAE training step (`vlae_step`)", "",
                  f"{v['model']}. Baseline: {v['baseline']}; its loss equals kvae's to "
                  f"{v['loss_parity_max_abs']:.1e} nats on the same weights and noise.", "",
                  "| configuration | step | first call (tracing) |", "|---|---|---|"]
        for key, label in (("baseline", "hand-written baseline"), ("kvae", "kvae"), ("kvae_xla", "kvae, XLA"),
                           ("kvae_mixed_bfloat16", "kvae, mixed_bfloat16")):
            lines.append(f"| {label} | {_step(r[key])} | {r[key]['first_call_seconds']:.1f} s |")
        ic = v["independent_check"]
        lines += ["", f"kvae / baseline **{v['ratio_kvae_over_baseline']:.2f}** (target ≤ {v['target_ratio']}); "
                  f"XLA / kvae {v['ratio_xla_over_kvae']:.2f}; mixed_bfloat16 / kvae "
                  f"{v['ratio_bfloat16_over_kvae']:.2f}. A 50000-image epoch at the median step: "
                  f"{v['epoch_seconds_50k_from_median_step']:.0f} s. Independent clock (one `fit` of "
                  f"{ic['steps']} steps, wall time / steps): {_ms(ic['fit_wall_seconds_per_step'])}, "
                  f"{ic['ratio_to_per_batch_median']:.2f}× the per-batch median.", ""]
        if "profile_train_step" in v:
            lines += ["Where a VLAE training step's time goes (TensorFlow profiler; each op's own CPU time, "
                      "share of all ops):", "", "| | top op types | top scopes |", "|---|---|---|"]
            for who, prof in v["profile_train_step"].items():
                ops = ", ".join(f"{o['op']} {o['share']:.0%}" for o in prof["by_op_type"][:6])
                scopes = ", ".join(f"{o['scope']} {o['share']:.0%}" for o in prof["by_scope"][:5])
                lines.append(f"| {who} | {ops} | {scopes} |")
            lines.append("")
    if "lvae_step" in b and "results" in b["lvae_step"]:
        v, r = b["lvae_step"], b["lvae_step"]["results"]
        lines += ["### Ladder VAE training step (`lvae_step`)", ""]
        if "measured_separately" in v:
            ms = v["measured_separately"]
            lines += [f"Measured separately ({ms['date']}, commit `{ms['commit'][:12]}`, load average "
                      f"{ms['load_average_at_start'][0]:.1f} at start: {ms['note']}).", ""]
        lines += [f"{v['model']}. Baseline: {v['baseline']}; its loss equals kvae's to "
                  f"{v['loss_parity_max_abs']:.1e} nats on the same weights and noise.", "",
                  "| configuration | step | first call (tracing) |", "|---|---|---|"]
        for key, label in (("baseline", "hand-written baseline"), ("kvae", "kvae")):
            lines.append(f"| {label} | {_step(r[key])} | {r[key]['first_call_seconds']:.1f} s |")
        lines += ["", f"kvae / baseline **{v['ratio_kvae_over_baseline']:.2f}** (target ≤ {v['target_ratio']}). "
                  f"A 50000-image epoch at the median step: {v['epoch_seconds_50k_from_median_step']:.0f} s.", ""]
    if "vae_epoch" in b and "results" in b["vae_epoch"]:
        v, r = b["vae_epoch"], b["vae_epoch"]["results"]
        lines += ["### MLP VAE training step (`vae_epoch`)", "", f"{v['network']}, Adam 1e-3.", "",
                  "| configuration | step | 50000-image epoch at the median |", "|---|---|---|"]
        for key in ("baseline", "kvae", "baseline_xla", "kvae_xla"):
            lines.append(f"| {key.replace('_xla', ', XLA')} | {_step(r[key])} | "
                         f"{r[key]['epoch_seconds_50k_from_median_step']:.1f} s |")
        lines += ["", f"kvae / baseline **{v['ratio_kvae_over_baseline']:.2f}** (target ≤ {v['target_ratio']}), "
                  f"with XLA {v['ratio_kvae_over_baseline_xla']:.2f}; kvae with XLA / without "
                  f"{v['ratio_xla_over_graph_kvae']:.2f}.", ""]
    if "is_eval" in b and "cases" in b["is_eval"]:
        v = b["is_eval"]
        lines += ["### Importance-sampled NLL (`is_eval`)", "", f"Model: {v['model']}; data: {v['data']}.", "",
                  "| k | examples | kvae | direct graph loop | direct XLA loop | kvae / graph | kvae / XLA | "
                  "NLL kvae / direct |", "|---|---|---|---|---|---|---|---|"]
        for c in v["cases"].values():
            r = c["results"]
            lines.append(f"| {c['k']} | {c['examples']} | {r['kvae']['calls']['median']:.2f} s | "
                         f"{r['direct_graph']['calls']['median']:.2f} s | {r['direct_xla']['calls']['median']:.2f} s | "
                         f"**{c['ratio_kvae_over_direct_graph']:.2f}** | {c['ratio_kvae_over_direct_xla']:.2f} | "
                         f"{c['nll_kvae']:.2f} / {c['nll_direct']:.2f} |")
        lines.append("")
        if "profile_k200" in v:
            lines += ["Where the time goes (TensorFlow profiler, k = 200, CPU time of each op type, share of "
                      "all ops):", "", "| | top op types |", "|---|---|"]
            for who, prof in v["profile_k200"].items():
                top = ", ".join(f"{o['op']} {o['share']:.0%}" for o in prof["by_op_type"][:6])
                lines.append(f"| {who} | {top} |")
            lines.append("")
    if "vlae_sampling" in b and "sampling" in b["vlae_sampling"]:
        s = b["vlae_sampling"]["sampling"]
        c = s["kvae_compiled_band"]["calls"]
        lines += ["### PixelCNN sampling (`vlae_sampling`)", "",
                  f"{s['images']} images of 28×28: kvae's compiled band sampler {c['median']:.2f} s (median of "
                  f"{c['n']}), the eager full-network baseline {s['naive_eager_full_seconds']:.1f} s "
                  f"({s['speedup_over_median']:.1f}× slower; identical images: {s['identical_images']}).", ""]
    if "distributed_throughput" in b and "results" in b["distributed_throughput"]:
        v, r = b["distributed_throughput"], b["distributed_throughput"]["results"]
        lines += ["### Distributed step (`distributed_throughput`)", "",
                  f"VAE 784-500-500-50, global batch {v['global_batch']}; {v['note']}.", "",
                  "| configuration | step | examples/s at the median |", "|---|---|---|"]
        for key, res in r.items():
            if "error" in res:
                lines.append(f"| {key} | fails: {res['error'][:90]} | |")
            else:
                lines.append(f"| {key} | {_step(res)} | {res['examples_per_second_from_median_step']:.0f} |")
        lines.append("")
    if "serving_latency" in b and "error" not in b["serving_latency"]:
        v = b["serving_latency"]
        lines += ["### Serving (`serving_latency`)", "", "Decode endpoint of the MLP VAE (50 → 784).", "",
                  "| | batch 1 median | batch 1 p99 | batch 1024 examples/s (median call) |", "|---|---|---|---|"]
        for key, label in (("onnx_runtime", "ONNX through `kvae_serve`"), ("savedmodel", "SavedModel signature"),
                           ("keras_predict", "Keras `predict`")):
            r = v["decode"][key]
            lines.append(f"| {label} | {r['batch1']['median_ms']:.3f} ms | {r['batch1']['p99_ms']:.3f} ms | "
                         f"{r['batch1024']['examples_per_second']:.0f} |")
        lines += ["", f"ONNX / SavedModel speed-up at batch 1: **{v['onnx_over_savedmodel_speedup_batch1']:.1f}×** "
                  f"(target {v['target_speedup']}×). The PixelCNN sampler exported as an ONNX `Loop` draws 64 "
                  f"images of 28×28 in {v['pixelcnn_onnx_sampler_64x28x28_seconds']:.1f} s.", ""]
    return "\n".join(lines).rstrip() + "\n"


def render_peer(report):
    """The kvae-vs-pythae table of ``benchmarks/peer_pythae.json``."""
    m = report["machine"]
    repeats = report.get("repeats", 1)
    lines = [f"{report['network']}, {report['optimizer']}, {report['epochs']} epochs on the first "
             f"{report['train_images']} training images, {repeats} interleaved runs per library and model; NLL on "
             f"the first {report['nll_images']} validation images, k = {report['k']}, each library's own "
             f"estimator. Peer: {', '.join(report['peer'])}. Commit "
             f"`{report['commit'][:12]}`, {m.get('cpu_model')}, load average {m.get('load_average_at_start', [0])[0]:.2f} "
             "at start" + (" (a busy machine: the ratio, not the seconds, is the figure)."
                           if m.get("load_average_at_start", [0])[0] > 1.5 else "."), "",
             "Step: the median over the runs' steps after 5 warm-up steps. Epoch: the median wall time of the "
             "runs' epochs after their first (which traces the step). Reconstruction error: -log p(x | E[x|z]) at "
             "the posterior mean code, nats per image, the same arithmetic for both (the only figure for the RAE, "
             "whose encoder is deterministic).", "",
             f"kvae runs as `kvae train` does ({report.get('kvae_steps_per_execution', {}).get('kvae', 1)} steps per "
             "call of the compiled step) and, as kvae-1, at Keras' default of one step per call; the "
             "spread is the 10th-90th percentile of the runs' epochs.", "",
             "| model | step kvae / kvae-1 / pythae | epoch kvae (spread) | epoch kvae-1 | epoch pythae (spread) "
             "| kvae / pythae | kvae-1 / pythae | NLL kvae | NLL pythae | NLL time kvae / pythae | rec. error kvae "
             "| rec. error pythae |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def nll(r):
        return "–" if r.get("nll") is None else f"{r['nll']:.2f}"

    def epoch(r, spread=True):
        e = r["steady_epochs"]
        return f"{e['median']:.2f} s" + (f" ({e['p10']:.2f}–{e['p90']:.2f})" if spread else "")

    for name, r in report["results"].items():
        if "kvae" not in r or "pythae" not in r or "steps" not in r["kvae"] or "steps" not in r["pythae"]:
            lines.append(f"| {name} | failed | | | | | | | | | | |")
            continue
        kv, py, one = r["kvae"], r["pythae"], r.get("kvae-1", {})
        timing = ("–" if kv.get("nll") is None else f"{kv['nll_seconds']:.1f} s / {py['nll_seconds']:.1f} s")
        rec = [("–" if x.get("rec_bce") is None else f"{x['rec_bce']:.2f}") for x in (kv, py)]
        one_step = _ms(one["steps"]["median"]) if "steps" in one else "–"
        one_ratio = r.get("epoch_ratio_kvae_over_pythae_one_step_per_call")
        lines.append(f"| {name} | {_ms(kv['steps']['median'])} / {one_step} / {_ms(py['steps']['median'])} | "
                     f"{epoch(kv)} | {epoch(one, False) if 'steps' in one else '–'} | {epoch(py)} | "
                     f"**{r['epoch_ratio_kvae_over_pythae']:.2f}** | "
                     f"{'–' if one_ratio is None else f'{one_ratio:.2f}'} | "
                     f"{nll(kv)} | {nll(py)} | {timing} | {rec[0]} | {rec[1]} |")
    return "\n".join(lines) + "\n"


def render_mutation(report):
    """The mutation-testing table of docs/testing.md from ``benchmarks/mutation_testing.json``."""
    lines = [f"Measured {report['date']} with {report['tool']} (`{report['command']}`).", "",
             "| module (functions) | tests | killed | survived | of which argued equivalent | timed out | no tests "
             "| score | score without the equivalent | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for result in report["modules"].values():
        c = result["counts"]
        functions = result["functions"] if result["functions"] == "all" else ", ".join(result["functions"])
        score, strict = result["score"], result.get("score_not_equivalent")
        lines.append(f"| `{result['module']}` ({functions}) | `{' '.join(result['tests'])}` | {c.get('killed', 0)} | "
                     f"{c.get('survived', 0)} | {len(result.get('equivalent', {}))} | {c.get('timeout', 0)} | "
                     f"{c.get('no tests', 0)} | {'–' if score is None else f'{score:.1%}'} | "
                     f"{'–' if strict is None else f'{strict:.1%}'} | {result['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results.json")
    with open(path) as f:
        print(render(json.load(f)), end="")


if __name__ == "__main__":
    main()
