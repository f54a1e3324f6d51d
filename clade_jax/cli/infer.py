"""Super-resolve an anisotropic NIfTI volume with a trained run of any method.

    python infer.py --workdir runs/mri --input scan.nii.gz --output scan_srr.nii.gz

Writes a float32 isotropic volume whose affine puts it exactly on top of the input in
any viewer (qform/sform codes kept), and scan_srr_compare.png beside it: the three
orthogonal planes through the most detailed point, input vs output, with a magnified
inset; with --report a QC page to open in a browser, with --qc-maps the detail the
method added and the slice residual as NIfTI. Prints
the input's and output's intensity ranges and how much of the input lay outside the
intensity window the networks see (also in the scan_srr.json sidecar). The slices are
split over every local device; with --multihost (same command in every process) over
the devices of all processes, and process 0 writes.
"""

import argparse
import sys


def _positive_int(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
  return value


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      epilog="The volume is prepared as in training (thick axis cubic-spline resampled "
             "to isotropic, its intensity window mapped to [-1, 1]) and mapped back to its "
             "own intensity units; voxels beyond the window keep their interpolated "
             "values. Defaults of --stride, --batch-size, --mode, --blend "
             "and --planes come from the run's config.json (eval.*).")
  parser.add_argument("--workdir", required=True, help="training workdir (config.json and "
                      "checkpoints/)")
  parser.add_argument("--input", required=True, help="anisotropic .nii or .nii.gz volume")
  parser.add_argument("--output", required=True, help=".nii or .nii.gz to write; never "
                      "the input")
  parser.add_argument("--step", type=int, help="checkpoint step (default: latest)")
  parser.add_argument("--stride", type=_positive_int,
                      help="sliding-window stride in pixels, at most the patch size "
                           "(default eval.stride: 12 MRI, 6 CT); smaller is slower and "
                           "smoother")
  parser.add_argument("--batch-size", type=_positive_int,
                      help="patches per generator call; sets the peak memory (default "
                           "eval.batch_size)")
  parser.add_argument("--mode", choices=("patch", "full"),
                      help="patch: the paper's overlapping sliding window; full: one "
                           "generator pass per whole slice, faster (default eval.mode)")
  parser.add_argument("--blend", choices=("flat", "taper"),
                      help="how the sliding window averages overlapping patches: flat (the "
                           "paper) or taper (a raised cosine fading each patch out towards "
                           "its border: no visible patch grid; default eval.blend, flat)")
  parser.add_argument("--planes", choices=("trained", "both"),
                      help="super-resolve the trained low-resolution plane, or both "
                           "low-resolution planes combined (twice the time; default "
                           "eval.planes: both for SMORE; for CLADE those it trained "
                           "on, data.lr_planes)")
  parser.add_argument("--consistency", action=argparse.BooleanOptionalAction,
                      help="project the output so that re-acquiring it with the slice "
                           "profile (data.slice_profile, data.slice_thickness) gives the "
                           "acquired slices (default eval.data_consistency)")
  parser.add_argument("--volume-index", type=int, metavar="N",
                      help="which volume of a 4D file (default data.volume_index)")
  parser.add_argument("--complex", dest="complex_mode", choices=("refuse", "magnitude"),
                      help="complex data: refuse it, or use the magnitude (default "
                           "data.complex)")
  parser.add_argument("--outside-window", dest="outside", choices=("restore", "clip"),
                      help="voxels beyond the intensity window the networks see: restore "
                           "them from the interpolated input (keeps the scan's range), or "
                           "clip them to the window as the paper does (default "
                           "eval.outside_window, restore)")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace an existing --output (never the input)")
  parser.add_argument("--jit-cache", metavar="DIR",
                      help="persistent compilation cache (default "
                           "$JAX_COMPILATION_CACHE_DIR or ~/.cache/clade_jax/jax; 'none' "
                           "turns it off)")
  parser.add_argument("--no-figure", dest="figure", action="store_false",
                      help="do not write <output stem>_compare.png")
  parser.add_argument("--report", action="store_true",
                      help="also write a QC page, <output stem>_report.html with its folder "
                           "<output stem>_report/ (opens offline in a browser: linked "
                           "viewers of input, cubic spline, output and the detail the method "
                           "added, and the run's facts in words)")
  parser.add_argument("--qc-maps", action="store_true",
                      help="also write <output stem>_added.nii.gz (output minus the cubic "
                           "spline input) and <output stem>_residual.nii.gz (re-acquired "
                           "output minus acquired slices, each slice's value on its nearest "
                           "output voxels), on the output's grid")
  parser.add_argument("--truth", metavar="FILE",
                      help="isotropic truth of the scan (a simulation's): PSNR/SSIM of the "
                           "output and of the cubic spline in the sidecar and the report")
  parser.add_argument("--no-progress", dest="progress", action="store_false",
                      help="no progress bar")
  cluster = parser.add_argument_group(
      "several processes", "start the same command in every process: the slices are "
      "split over the devices of all of them, process 0 writes the output")
  cluster.add_argument("--multihost", action="store_true",
                       help="start JAX's distributed runtime from the flags below, else "
                            "$JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES and "
                            "$JAX_PROCESS_ID, else what JAX detects (SLURM, Open MPI, "
                            "Cloud TPU)")
  cluster.add_argument("--coordinator-address", metavar="HOST:PORT",
                       help="process 0's address (implies --multihost)")
  cluster.add_argument("--num-processes", type=_positive_int,
                       help="number of processes (implies --multihost)")
  cluster.add_argument("--process-id", type=int, help="this process's index (implies "
                       "--multihost)")
  return parser.parse_args(argv)


def intensity_line(report: dict) -> str:
  """One line: the input's and output's ranges and what lay outside the window."""
  r = report
  fmt = lambda pair: f"{pair[0]:.6g}..{pair[1]:.6g}"
  what = ("restored from the input" if r.get("outside_window", "restore") == "restore"
          else "clipped to the window")
  return (f"intensities: input {fmt(r['input_range'])}, output {fmt(r['output_range'])}; "
          f"window {fmt(r['window'])} ({r.get('normalization', 'percentile')}): "
          f"{100 * r['below_window']:.2f}% of input voxels below it, "
          f"{100 * r['above_window']:.2f}% above ({what})")


def main(argv=None) -> int:
  args = parse_args(argv)
  # Imported after parsing so that --help answers without loading JAX.
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # Orbax logs every file it reads at INFO.
  from clade_jax import checkpointing, compilation_cache, distributed, inference  # pylint: disable=g-import-not-at-top
  from clade_jax import volume_srr  # pylint: disable=g-import-not-at-top
  from clade_jax.data import volume  # pylint: disable=g-import-not-at-top

  compilation_cache.enable(args.jit_cache)
  try:
    distributed.start(args.multihost, args.coordinator_address, args.num_processes,
                      args.process_id)
  except distributed.DistributedError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  options = volume_srr.SROptions(
      stride=args.stride, batch_size=args.batch_size, mode=args.mode, blend=args.blend,
      planes=args.planes, progress=args.progress and distributed.is_main())
  try:
    result = inference.run(
        args.workdir, args.input, args.output, options=options, step=args.step,
        data_consistency=args.consistency, volume_index=args.volume_index,
        complex_mode=args.complex_mode, outside=args.outside, overwrite=args.overwrite,
        figure=args.figure, report=args.report, qc_maps=args.qc_maps, truth=args.truth)
  except (volume.VolumeError, checkpointing.CheckpointError, inference.UsageError) as e:
    print("error: " + " ".join(str(e).split()), file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print("error: interrupted; nothing was written", file=sys.stderr)
    return 130
  if not distributed.is_main():
    return 0  # Process 0 wrote the output and reports it.
  shape = "x".join(map(str, result.shape))
  spacing = "x".join(f"{s:g}" for s in result.spacing)
  print(f"wrote {result.output} ({shape} voxels of {spacing} mm; {result.method} step "
        f"{result.step}, {result.options.describe()}, {result.options.planes} plane(s)) in "
        f"{result.seconds:.1f} s")
  if result.intensity is not None:
    print(intensity_line(result.intensity))
  if result.residual_before is not None:
    before = result.residual_before["rms_relative"]
    line = (f"slice residual (RMS of re-acquired minus acquired, of the input's robust "
            f"range): {100 * before:.2f}%")
    if result.residual_after is not None:
      line += f" -> {100 * result.residual_after['rms_relative']:.2g}% after data consistency"
    print(line)
  if result.truth_metrics is not None:
    out, cubic = result.truth_metrics["output"], result.truth_metrics["cubic"]
    print(f"against the truth: PSNR {out['psnr']:.2f} dB (cubic {cubic['psnr']:.2f}), "
          f"SSIM {out['ssim']:.4f} (cubic {cubic['ssim']:.4f})")
  if result.figure:
    print(f"wrote {result.figure}")
  for path in (result.qc_maps or {}).values():
    print(f"wrote {path}")
  if result.report:
    print(f"wrote {result.report} (open it in a browser; keep its folder beside it)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
