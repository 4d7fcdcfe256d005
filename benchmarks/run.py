"""One benchmark entry point (`make bench`): writes outputs/bench/report.json and report.md.

    python benchmarks/run.py                        # CPU, fp32, 2 threads: every CPU section
    python benchmarks/run.py --quick                # fewer repeats / smaller sets (a few minutes)
    python benchmarks/run.py --sections peer stage2 # only some sections
    python benchmarks/run.py --device cuda --bf16   # GPU: layouts at W.A.L.T-L size, MFU, peer ratio

Sections (each timed side by side in one process, interleaved, median of repeats; see common.py):
    stage2        train step time, tokens/s, peak memory per layout (W.A.L.T S/ST windows, full
                  attention, Latte V1 = s_t, ...) at one width/depth (bench_transformer.py)
    stage1        tiny autoencoder encode / decode clips/s (bench_autoencoder.py)
    sampling      DDIM sampling time per video with the tiny model, plus decoding (bench_sampling.py)
    data          DataModule clips/s of 17x128x128 mp4 clips by workers, decode path, item dtype (bench_data.py)
    peer          ours / diffusers' LatteTransformer3DModel step-time ratio at matched width, depth,
                  heads and tokens (bench_peer.py); on CPU the run FAILS (exit 1) above 0.75
    demo_levers   the demo's stage-1 training step per lever (channels_last_3d, smaller preset, batch,
                  threads) and the tiny stage-2 step at 1 vs 2 threads
    mfu           (GPU) W.A.L.T-L at 17x128x128 (latent 5x16x16x8, p = 1): step time, MFU = model FLOPs /
                  (step time x peak FLOPS; --peak-flops, default H100 dense bf16 989e12), full/windowed

The report also holds the machine (CPU model, cores, load average before and after every section),
library versions (torch, lightning, diffusers) and the git commit. A section that raises is recorded
with its error and makes the run exit non-zero after the report is written.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import common  # noqa: E402

CPU_SECTIONS = ("stage2", "stage1", "sampling", "data", "peer", "demo_levers")
GPU_SECTIONS = ("stage2", "stage1", "sampling", "peer", "mfu")
ALL_SECTIONS = ("stage2", "stage1", "sampling", "data", "peer", "demo_levers", "mfu")


# ----------------------------------------------------------------------------------------- sections
def section_stage2(args) -> dict:
    from bench_transformer import DEFAULT_LAYOUTS, layouts_bench

    layouts = args.layouts or (("walt", "full", "latte_v1") if args.quick else DEFAULT_LAYOUTS)
    if args.cuda:  # the paper's model size
        return layouts_bench(layouts, device=args.device, bf16=args.bf16, preset="walt_l", depth=None,
                             hidden_size=None, num_heads=None, batch=args.batch or 8,
                             repeats=3 if args.quick else 5, warmup=2, compile=args.compile,
                             peak_flops=args.peak_flops)
    return layouts_bench(layouts, device=args.device, bf16=args.bf16, batch=args.batch or 2,
                         repeats=2 if args.quick else 3, peak_flops=args.peak_flops)


def section_stage1(args) -> dict:
    from bench_autoencoder import count_params, throughput

    rows = []
    if args.cuda:
        for name in ("tiny", "magvit2"):
            rows.append(throughput(name, torch.device(args.device), args.bf16, 8, 17, 128, 1, 3 if args.quick else 10))
    else:
        for size in ((32,) if args.quick else (32, 64)):
            rows.append(throughput("tiny", torch.device("cpu"), False, 8, 17, size, 1, 2 if args.quick else 3))
    for row in rows:
        row["encode_clips_per_s"] = round(1 / row["encode_s_per_clip"], 2)
        row["decode_clips_per_s"] = round(1 / row["decode_s_per_clip"], 2)
    return {"params": [count_params("tiny"), count_params("magvit2")], "results": rows}


def section_sampling(args) -> dict:
    from bench_sampling import ddim_bench

    if args.cuda:
        return ddim_bench(device=args.device, latent=(5, 8, 8), steps=(25, 50), batch=64, repeats=5)
    return ddim_bench(device="cpu", latent=(5, 4, 4), steps=(25,) if args.quick else (25, 50), batch=16,
                      repeats=2 if args.quick else 3)


def section_data(args) -> dict:
    from bench_data import CONFIGS, measure

    if args.quick:  # the configurations behind the headline ratios only
        configs = [c for c in CONFIGS if c[1] == "seek+resized" and c[0] > 0]
        return measure(videos=12, seconds=4, repeat=8, rounds=1, clips=64, configs=configs)
    return measure()


def section_peer(args) -> dict:
    from bench_peer import peer_ratio

    if args.cuda:
        return peer_ratio(device=args.device, bf16=args.bf16, batch=args.batch or 8, repeats=3 if args.quick else 5,
                          warmup=2, compile=args.compile, max_ratio=args.max_ratio)
    return peer_ratio(device="cpu", batch=2, repeats=2 if args.quick else 3, max_ratio=args.max_ratio)


def section_demo_levers(args) -> dict:
    from bench_autoencoder import DEFAULT_LEVERS, train_levers
    from bench_transformer import demo_threads

    levers = ("fp32", "channels_last_3d", "base8", "channels_last_3d+base8", "batch8", "threads1") if args.quick \
        else DEFAULT_LEVERS
    return {"stage1_autoencoder": train_levers(levers, repeats=2 if args.quick else 3),
            "stage2_tiny": demo_threads(repeats=3 if args.quick else 5)}


def section_mfu(args) -> dict:
    from bench_transformer import mfu_walt_l

    if not args.cuda:
        return {"skipped": "MFU is measured on a GPU (--device cuda --bf16)"}
    return mfu_walt_l(device=args.device, bf16=args.bf16, batch=args.batch or 8, repeats=3 if args.quick else 5,
                      compile=args.compile, peak_flops=args.peak_flops)


SECTIONS = {"stage2": section_stage2, "stage1": section_stage1, "sampling": section_sampling, "data": section_data,
            "peer": section_peer, "demo_levers": section_demo_levers, "mfu": section_mfu}


# ----------------------------------------------------------------------------------------- report
def _table(header, rows) -> list:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def markdown(report: dict) -> str:
    m, v, g = report["machine"], report["versions"], report["git"]
    out = ["# Benchmark report", "",
           f"- when: {report['started']} ({report['wall_s']:.0f} s){' — quick run' if report['args']['quick'] else ''}",
           f"- machine: {m['cpu']}, {m['usable_cpus']} usable CPUs ({m['logical_cpus']} logical), "
           f"torch threads {report['threads']}, load average at start {m['load_average_1_5_15']}"
           + (f", GPU {m['gpu']}" if "gpu" in m else ""),
           f"- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
           f"- git: {g['commit']}" + (" (uncommitted changes)" if g["dirty"] else ""),
           "- all times: median of interleaved repeats in one process; compare ratios, not absolute times", ""]
    s = report["sections"]

    if "peer" in s and "models" in s["peer"]:
        p = s["peer"]
        c = p["config"]
        out += ["## Peer: diffusers LatteTransformer3DModel (train step, ours / diffusers)", "",
                f"d={c['hidden_size']}, {c['num_heads']} heads, {c['blocks']} blocks, latents {c['latents']}, "
                f"p={c['patch_size']}, batch {c['batch']} ({c['tokens_per_step']} tokens), text {c['text']}, "
                f"{'bf16' if c['bf16'] else 'fp32'}, {c['device']}, {c['threads']} threads, {c['repeats']} repeats", ""]
        out += _table(["model", "params (M)", "s/step", "tokens/s", "ours / diffusers", "FLOPs ours / diffusers",
                       "time per FLOP ours / diffusers", "windows"],
                      [[n, r["params_m"], r["s_per_step"], r["tokens_per_s"], r["ratio_vs_diffusers"], r.get("flop_ratio"),
                        r.get("time_per_flop_ratio"), ", ".join(f"{k} {w}" for k, w in r.get("windows", {}).items())]
                       for n, r in p["models"].items()])
        out += [f"**worst ratio {p['worst_ratio']} (limit {p['max_ratio']}): {'PASS' if p['passed'] else 'FAIL'}**", ""]

    if "stage2" in s and "layouts" in s["stage2"]:
        c = s["stage2"]["config"]
        out += ["## Stage 2: train step per layout", "",
                f"{c['preset']} shape, depth {c.get('depth', 'preset')}, d={c.get('hidden_size', 'preset')}, "
                f"heads {c.get('num_heads', 'preset')}, latents {c['latents']}, p={c['patch_size']}, batch "
                f"{c['batch']} ({c['tokens_per_step']} tokens), {'bf16' if c['bf16'] else 'fp32'}, {c['device']}, "
                f"{c['threads']} threads; memory: {c['memory']}", ""]
        rows = []
        for n, r in s["stage2"]["layouts"].items():
            rows.append([n, r["blocks"], ", ".join(f"{k} {w}" for k, w in r["windows"].items()), r["params_m"],
                         r["s_per_step"], r["tokens_per_s"], r.get("full_over_this", ""), r.get("peak_step_mem_mib"),
                         f"{r['mfu']:.1%}" if "mfu" in r else ""])
        out += _table(["layout", "blocks", "token windows", "params (M)", "s/step", "tokens/s", "full / this",
                       "peak step MiB", "MFU"], rows)

    if "mfu" in s and "layouts" in s["mfu"]:
        mf = s["mfu"]
        out += ["## W.A.L.T-L MFU (17x128x128, latent 5x16x16x8, p=1)", "",
                f"peak {mf['config']['peak_flops']:.3g} FLOP/s, batch {mf['config']['batch']}", ""]
        out += _table(["layout", "s/step", "tokens/s", "MFU", "peak step MiB"],
                      [[n, r["s_per_step"], r["tokens_per_s"], f"{r['mfu']:.1%}", r.get("peak_step_mem_mib")]
                       for n, r in mf["layouts"].items()])
        if "full_over_windowed" in mf:
            out += [f"full / windowed step time: {mf['full_over_windowed']} (paper 1.67)", ""]

    if "stage1" in s and "results" in s["stage1"]:
        out += ["## Stage 1: autoencoder encode / decode (inference)", ""]
        out += _table(["preset", "clip", "batch", "encode clips/s", "decode clips/s", "enc+dec clips/s", "TFLOP/s"],
                      [[r["preset"], r["clip"], r["batch"], r["encode_clips_per_s"], r["decode_clips_per_s"],
                        r["clips_per_s"], r["achieved_tflops"]] for r in s["stage1"]["results"]])

    if "sampling" in s and "results" in s["sampling"]:
        c = s["sampling"]["config"]
        out += ["## DDIM sampling (tiny)", "",
                f"{c['model']}, latent {c['latent']} ({c['video']} videos), batch {c['batch']}, self-conditioning "
                f"{c['self_condition']}, {c['device']}, {c['threads']} threads", ""]
        out += _table(["what", "s/batch", "s/video", "ms/video/step"],
                      [[n, r["s_per_batch"], r["s_per_video"], r.get("ms_per_video_per_step", "")]
                       for n, r in s["sampling"]["results"].items()])

    if "data" in s and "error" not in s["data"]:
        d = s["data"]
        out += ["## Data loader", "", f"{d['config']}", ""]
        out += _table(["loader", "clips/s", "CPU ms/clip"],
                      [[k, r, d["cpu_ms_per_clip"][k]] for k, r in d["clips_per_s"].items()])
        out += _table(["ratio (same run)", "x"], [[k, r] for k, r in d["ratios"].items()])

    if "demo_levers" in s and "stage1_autoencoder" in s["demo_levers"]:
        a = s["demo_levers"]["stage1_autoencoder"]
        c = a["config"]
        out += ["## Demo levers: stage-1 tiny autoencoder training step", "",
                f"{c['preset']} preset, {c['clip']} clips, {c['step']}; base = {c['base']} (batch {c['batch']}, "
                f"{c['threads']} threads); ratio = seconds per sample / base's", ""]
        out += _table(["variant", "batch", "threads", "params (M)", "s/step", "s/sample", "per-sample vs base"],
                      [[n, r["batch"], r["threads"], r["params_m"], r["s_per_step"], r["s_per_sample"],
                        r["per_sample_vs_base"]] for n, r in a["variants"].items()])
        t = s["demo_levers"]["stage2_tiny"]
        out += ["## Demo levers: stage-2 tiny training step (raw step, no Lightning)", "",
                f"walt_tiny, batch {t['config']['batch']}, p={t['config']['patch_size']}, self_cond_prob "
                f"{t['config']['self_cond_prob']}", ""]
        out += _table(["variant", "s/step", "ms/sample", "vs max threads"],
                      [[n, r["s_per_step"], r["ms_per_sample"], r["over_max_threads"]] for n, r in t["variants"].items()])

    errors = {n: sec["error"] for n, sec in s.items() if isinstance(sec, dict) and "error" in sec}
    skipped = {n: sec["skipped"] for n, sec in s.items() if isinstance(sec, dict) and "skipped" in sec}
    if skipped:
        out += ["## Skipped", ""] + [f"- {n}: {why}" for n, why in skipped.items()] + [""]
    if errors:
        out += ["## Errors", ""] + [f"- {n}: {e}" for n, e in errors.items()] + [""]
    out += ["## Section timings", ""]
    out += _table(["section", "wall s", "load before", "load after"],
                  [[n, t["wall_s"], t["load_before"], t["load_after"]] for n, t in report["section_timings"].items()])
    return "\n".join(out)


# ----------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repeats and variants")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--threads", type=int, default=2, help="CPU intra-op threads (default 2, the peer setting)")
    p.add_argument("--sections", nargs="+", choices=ALL_SECTIONS, default=None,
                   help=f"default: {' '.join(CPU_SECTIONS)} on CPU, {' '.join(GPU_SECTIONS)} on GPU")
    p.add_argument("--layouts", nargs="+", default=None, help="stage-2 layouts (bench_transformer.STAGE2_LAYOUTS "
                   "names or walt.transformer.LAYOUTS names)")
    p.add_argument("--batch", type=int, default=None, help="stage-2 / peer batch (default 2 CPU, 8 GPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the transformers (GPU)")
    p.add_argument("--peak-flops", type=float, default=None, help="peak FLOP/s for MFU (default: H100 bf16 989e12)")
    p.add_argument("--max-ratio", type=float, default=None, help="peer ratio limit (default 0.75 CPU, 0.8 GPU)")
    p.add_argument("--out", default=str(common.ROOT / "outputs" / "bench"))
    args = p.parse_args(argv)
    args.cuda = torch.device(args.device).type == "cuda"
    if args.cuda and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    args.sections = args.sections or (GPU_SECTIONS if args.cuda else CPU_SECTIONS)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "args": {k: v for k, v in vars(args).items()},
              "threads": torch.get_num_threads(), "machine": common.machine(args.device),
              "versions": common.library_versions(), "git": common.git_commit(), "sections": {},
              "section_timings": {}}
    failures = []

    def write():
        report["wall_s"] = round(time.perf_counter() - start, 1)
        data = common.jsonable(report)
        (out_dir / "report.json").write_text(json.dumps(data, indent=1) + "\n")
        (out_dir / "report.md").write_text(markdown(data) + "\n")

    for name in args.sections:
        load_before = common.load_average()
        t0 = time.perf_counter()
        print(f"[bench] {name} ... (load {load_before})", flush=True)
        try:
            result = SECTIONS[name](args)
        except Exception as exc:  # noqa: BLE001 - recorded, the run fails at the end
            traceback.print_exc()
            result = {"error": f"{type(exc).__name__}: {exc}"}
            failures.append(f"{name}: {result['error']}")
        torch.set_num_threads(args.threads)
        report["sections"][name] = result
        report["section_timings"][name] = {"wall_s": round(time.perf_counter() - t0, 1), "load_before": load_before,
                                           "load_after": common.load_average()}
        print(f"[bench] {name} done in {report['section_timings'][name]['wall_s']} s", flush=True)
        write()  # after every section: an interrupted run keeps what it measured
    peer = report["sections"].get("peer", {})
    if "passed" in peer and not peer["passed"]:
        rows = ", ".join(f"{n} {r['ratio_vs_diffusers']}" for n, r in peer["models"].items())
        failures.append(f"peer: ours / diffusers step-time ratio {peer['worst_ratio']} exceeds {peer['max_ratio']} ({rows})")
    report["failures"] = failures
    write()
    print((out_dir / "report.md").read_text())
    print(f"[bench] wrote {out_dir / 'report.json'} and {out_dir / 'report.md'}")
    if failures:
        print("[bench] FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
