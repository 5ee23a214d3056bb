"""The comparison report of a run: one row per exported file, a recommended variant (no TensorFlow).

The report is built from what the stages left on disk (``train_result.json``,
``qat/qat_result.json``, ``export/manifest.json``, ``eval/*.json``,
``bench/bench.json``), so it can be rebuilt at any time and every figure in it
was measured on the exported files themselves. Written as ``report.md``,
``report.json`` and ``report.csv`` in the run directory, with PNG plots in
``plots/``.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from edgetl import __version__
from edgetl._atomic import write_json, write_text
from edgetl.config import ReportConfig
from edgetl.errors import RunDirError
from edgetl.export.variants import REFERENCE_VARIANT
from edgetl.run_dir import RunPaths
from edgetl.stats import ALPHA

_CSV_COLUMNS = ("variant", "file", "size_mb", "accuracy", "accuracy_low", "accuracy_high", "images", "delta_pts",
                "lost", "gained", "p_value", "p50_ms", "p90_ms", "noise", "latency_reliable", "threads", "speedup",
                "agreement", "flagged", "recommended", "sha256", "min_runtime")
# Latencies closer than this (relative) are a tie even when both measurements were quiet:
# run-to-run differences of a few percent are common on any host.
MIN_LATENCY_MARGIN = 0.05
# Files within this share of the smallest one's size are equally small: the more accurate of them is picked.
# Its use: the int8 (PTQ) and qat-int8 files of a run differ by a few KB, and the one to ship between them is
# the one whose quantization lost less, not the one a few bytes smaller (issue 15).
SIZE_TIE = 0.05


@dataclasses.dataclass
class VariantRow:
    """One exported file in the report.

    Attributes:
      variant: variant name (``edgetl.export.variants``).
      file: the ``.tflite`` file name (in the run's export folder).
      size_bytes: file size.
      accuracy: top-1 on the validation split, measured by running this file.
      delta_pts: ``accuracy`` minus the Keras float accuracy, in points.
      p50_ms: median latency at ``threads`` (the fastest thread count measured).
      p90_ms: 90th percentile latency at ``threads``.
      threads: the thread count of ``p50_ms``/``p90_ms``.
      speedup: the reference (fp32) file's best p50 divided by this file's best p50.
      agreement: share of validation images where this file's top-1 equals
        the Keras float model's (from the export's verification).
      flagged: the export flagged this file's accuracy drop.
      sha256: file digest.
      images: validation images the file was evaluated on.
      accuracy_ci: 95 % Wilson interval of ``accuracy`` as (low, high)
        fractions (None when SciPy is missing).
      vs_float: McNemar's exact test against the Keras float model on the same
        images (``edgetl.stats.PairedComparison`` as a dict, None when the run
        has no per-image predictions of the float model).
      noise: spread of the benchmark's per-round medians at ``threads``.
      latency_reliable: False when the benchmark stayed noisy; its latency is not ranked.
      min_runtime: the oldest TFLite runtime the file loads in ('' when not recorded).
    """

    variant: str
    file: str
    size_bytes: int
    accuracy: Optional[float]
    delta_pts: Optional[float]
    p50_ms: Optional[float]
    p90_ms: Optional[float]
    threads: Optional[int]
    speedup: Optional[float]
    agreement: Optional[float]
    flagged: bool
    sha256: str
    images: Optional[int] = None
    accuracy_ci: Optional[Tuple[float, float]] = None
    vs_float: Optional[Dict[str, Any]] = None
    noise: Optional[float] = None
    latency_reliable: bool = True
    min_runtime: str = ""

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 1e6

    @property
    def measurably_worse(self) -> bool:
        """True when McNemar's test says this file is less accurate than the Keras float model."""
        return bool(self.vs_float and self.vs_float["p_value"] < ALPHA and self.vs_float["lost"] > self.vs_float["gained"])


@dataclasses.dataclass
class Report:
    """A run's comparison of its exported files.

    Attributes:
      run_dir: the run directory.
      created: ISO time the report was built.
      data: the training data folder and split sizes.
      model: backbone, alpha, input size and starting weights.
      float_accuracy: the Keras float model's top-1 on the validation split.
      qat_accuracy: the Keras QAT model's top-1 on the same images (None without QAT).
      val_images: validation images every file was evaluated on.
      rows: one per exported file, in export order.
      recommended: the variant the rule picks (None when no file was measured).
      reason: why it was picked, in words.
      rule: the rule's settings (max_drop, prefer).
      sweep: every (variant, threads) latency measured.
      host: the machine the files were benchmarked on.
      versions: edgetl, training stack and TFLite runtime versions.
      plots: PNG files of the report, relative to the run directory.
      warnings: problems found while exporting or measuring.
      float_accuracy_ci: 95 % Wilson interval of ``float_accuracy``.
      notes: caveats on how far the figures can be trusted (a small
        validation split, noisy latencies, missing SciPy).
      qat_vs_ptq: McNemar's exact test of the qat-int8 file against the int8
        (post-training quantization) file on the same validation images
        (``PairedComparison`` fields plus ``qat_accuracy``/``ptq_accuracy``);
        None unless both files were evaluated with per-image predictions.
      tuning: the ``--tune`` search that chose the training recipe
        (``summary``, ``headers``, ``rows``: one per trial, the winner marked
        ``*``); None when the run was not tuned.
    """

    run_dir: str
    created: str
    data: Dict[str, Any]
    model: Dict[str, Any]
    float_accuracy: Optional[float]
    qat_accuracy: Optional[float]
    val_images: int
    rows: List[VariantRow]
    recommended: Optional[str]
    reason: str
    rule: Dict[str, Any]
    sweep: List[Dict[str, Any]]
    host: Dict[str, Any]
    versions: Dict[str, str]
    plots: List[str] = dataclasses.field(default_factory=list)
    warnings: List[str] = dataclasses.field(default_factory=list)
    float_accuracy_ci: Optional[Tuple[float, float]] = None
    notes: List[str] = dataclasses.field(default_factory=list)
    qat_vs_ptq: Optional[Dict[str, Any]] = None
    tuning: Optional[Dict[str, Any]] = None

    def row(self, variant: str) -> VariantRow:
        """The row of ``variant``; KeyError when it was not exported."""
        for row in self.rows:
            if row.variant == variant:
                return row
        raise KeyError(variant)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dictionary (``report.json``)."""
        data = dataclasses.asdict(self)
        for row, out in zip(self.rows, data["rows"]):
            out["size_mb"] = round(row.size_mb, 3)
            out["recommended"] = row.variant == self.recommended
        return data

    def table_rows(self) -> List[List[Any]]:
        """The main table's cells, one list per file (None = not measured)."""
        rows = []
        for row in self.rows:
            p_value = row.vs_float["p_value"] if row.vs_float else None
            rows.append([
                row.variant + (" *" if row.variant == self.recommended else ""), row.file, round(row.size_mb, 2),
                _pct(row.accuracy), _interval(row.accuracy_ci), _signed(row.delta_pts),
                None if p_value is None else f"{p_value:.2g}", _round(row.p50_ms), _round(row.p90_ms),
                None if row.noise is None else f"{row.noise * 100:.0f}%" + ("" if row.latency_reliable else " noisy"),
                row.threads, f"{row.speedup:.2f}x" if row.speedup else None, row.min_runtime or None,
            ])
        return rows

    HEADERS = ("variant", "file", "size MB", "accuracy", "95% CI", "Δ vs float", "p", "p50 ms", "p90 ms", "noise",
               "threads", "speed-up", "min runtime")

    def format(self) -> str:
        """The terminal version: the table, the recommendation, where the files are."""
        from edgetl._table import format_table

        lines = [self._headline(), "", format_table(self.HEADERS, self.table_rows()), "",
                 f"Recommended: {self.recommended or '-'} ({self.reason})"]
        if self.qat_vs_ptq:
            lines.append(self.qat_verdict())
        if self.tuning:
            lines.append(f"Recipe search (--tune): {self.tuning['summary']}; trials in {RunPaths.of(self.run_dir).tune}")
        lines.extend(f"note: {note}" for note in self.notes)
        lines.extend(f"WARNING: {warning}" for warning in self.warnings)
        lines.append(f"Report: {RunPaths.of(self.run_dir).report_md} (+ .json, .csv, plots/)")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """``report.md``: the table, the recommendation, the thread sweep, host and versions, the plots."""
        model = self.model
        lines = [
            f"# edgetl report: {Path(self.run_dir).name}",
            "",
            self._headline(),
            "",
            "Accuracy is top-1 on the validation split, measured by running each exported `.tflite` file with the "
            "TFLite interpreter, with its 95 % Wilson interval. Δ is against the Keras float model on the same "
            "images, and p is McNemar's exact test of that difference (p < 0.05: a measurable difference; "
            "otherwise the split cannot tell it from chance). Latency is the fastest thread count of the sweep "
            "below, the files measured interleaved in rounds; noise is the spread of the round medians, and a "
            f"'noisy' latency is not used to rank. Speed-up is against the {REFERENCE_VARIANT} file. Min runtime is the oldest "
            "TFLite runtime that loads the file (its `min_runtime_version`).",
            "",
            "| " + " | ".join(self.HEADERS) + " |",
            "|" + "|".join(["---", "---"] + ["---:"] * (len(self.HEADERS) - 2)) + "|",
        ]
        for cells in self.table_rows():
            cells[1] = f"`{cells[1]}`"
            lines.append("| " + " | ".join("-" if c is None else str(c) for c in cells) + " |")
        lines += ["", f"**Recommended: {self.recommended or 'none'}** — {self.reason}.", ""]
        comparisons = [(row.variant, row.vs_float) for row in self.rows if row.vs_float]
        if comparisons:
            lines += ["Against the Keras float model (McNemar's exact test on the same images):", ""]
            lines += [f"- {variant}: {describe_comparison(comparison)}" for variant, comparison in comparisons] + [""]
        if self.qat_vs_ptq:
            lines += [self.qat_verdict(), ""]
        if self.notes:
            lines += ["Notes:", ""] + [f"- {note}" for note in self.notes] + [""]
        if self.warnings:
            lines += ["Warnings:", ""] + [f"- {w}" for w in self.warnings] + [""]
        if self.tuning:
            lines += ["## Recipe search (--tune)", "",
                      f"{self.tuning['summary']}. Each trial's figure is its best epoch's validation accuracy "
                      "(the images of the table above); `*` marks the winning recipe, which RUN/config.yaml "
                      "repeats without a search. When it is a fine-tuning trial, the run's model is that trial's "
                      "weights (RUN/tune/best_trial.h5), not a second training of its recipe.", "",
                      "| " + " | ".join(self.tuning["headers"]) + " |",
                      "|" + "|".join("---" for _ in self.tuning["headers"]) + "|"]
            lines += ["| " + " | ".join("-" if c is None else str(c) for c in row) + " |" for row in self.tuning["rows"]]
            lines.append("")
        if self.sweep:
            lines += ["## Latency by thread count", "",
                      "| file | threads | p50 ms | p90 ms | mean ms | runs | rounds | noise | init ms |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for s in self.sweep:
                noise = f"{s.get('noise', 0.0) * 100:.1f}%" + ("" if s.get("reliable", True) else " noisy")
                lines.append(f"| `{s['file']}` | {s['threads']} | {s['p50_ms']:.3f} | {s['p90_ms']:.3f} | "
                             f"{s['mean_ms']:.3f} | {s['runs']} | {s.get('rounds', 1)} | {noise} | {s['init_ms']:.1f} |")
            lines.append("")
        host = self.host
        lines += ["## Host and versions", "",
                  f"- host: {host.get('cpu', '?')}, {host.get('usable_cores', '?')} usable cores, "
                  f"{host.get('os', '?')} {host.get('machine', '')}, {host.get('python', '?')}"]
        lines += [f"- {name}: {version}" for name, version in self.versions.items()]
        lines += [f"- model: {model.get('backbone')}"
                  + (f" alpha {model['alpha']:g}" if model.get("alpha") is not None else "")
                  + f" @ {model.get('size')} px, weights: {model.get('weights')}", ""]
        if self.plots:
            lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in self.plots] + [""]
        lines += [f"Created {self.created} by edgetl {__version__}. Repeat with `edgetl run {self.data.get('path', 'DATA')} "
                  f"--recipe {Path(self.run_dir) / 'config.yaml'} --out {self.run_dir}`.", ""]
        return "\n".join(lines)

    def to_csv(self) -> str:
        """``report.csv``: one row per file, raw numbers."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(_CSV_COLUMNS)
        for row in self.rows:
            low, high = row.accuracy_ci or (None, None)
            paired = row.vs_float or {}
            writer.writerow(["" if v is None else v for v in (
                row.variant, row.file, round(row.size_mb, 4), row.accuracy, low, high, row.images, row.delta_pts,
                paired.get("lost"), paired.get("gained"), paired.get("p_value"), row.p50_ms, row.p90_ms, row.noise,
                row.latency_reliable, row.threads, row.speedup, row.agreement, row.flagged,
                row.variant == self.recommended, row.sha256, row.min_runtime)])
        return buffer.getvalue()

    def qat_verdict(self) -> str:
        """One sentence: did quantization-aware training beat post-training quantization in this run?"""
        c = self.qat_vs_ptq or {}
        qat, ptq = c.get("qat_accuracy"), c.get("ptq_accuracy")
        if qat is None or ptq is None:
            return ""
        versus = f"qat-int8 {qat:.2%} vs int8 {ptq:.2%} ({describe_comparison(c)}, McNemar on the same images)"
        if qat > ptq:
            return f"QAT against post-training quantization: QAT is better here, {versus}."
        if qat < ptq:
            return (f"QAT against post-training quantization: QAT did not beat PTQ in this run, {versus}; "
                    f"where the two int8 files tie on speed, the recommendation takes the more accurate one.")
        return f"QAT against post-training quantization: the same accuracy, {versus}."

    def _headline(self) -> str:
        model, data = self.model, self.data
        qat = f", Keras QAT {self.qat_accuracy:.2%}" if self.qat_accuracy is not None else ""
        alpha = f" alpha {model['alpha']:g}" if model.get("alpha") is not None else ""
        float_acc = f"{self.float_accuracy:.2%}" if self.float_accuracy is not None else "-"
        if self.float_accuracy_ci:
            float_acc += f" (95% CI {_interval(self.float_accuracy_ci)})"
        return (f"{model.get('backbone')}{alpha} @ {model.get('size')} px ({model.get('weights')}) on "
                f"{data.get('classes')} classes, {data.get('train_images')} train / {self.val_images} val images. "
                f"Keras float accuracy {float_acc}{qat}.")


def _pct(value: Optional[float]) -> Optional[str]:
    return None if value is None else f"{value:.2%}"


def _signed(value: Optional[float]) -> Optional[str]:
    return None if value is None else f"{value:+.2f}"


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 3)


def _interval(interval: Optional[Sequence[float]]) -> Optional[str]:
    return None if not interval else f"{interval[0] * 100:.1f}–{interval[1] * 100:.1f}"


def describe_comparison(comparison: Dict[str, Any]) -> str:
    """A PairedComparison dict in words, e.g. '-1.96 pts, 3 images net (3 lost, 0 gained), p = 0.25: not a measurable loss'."""
    from edgetl.stats import PairedComparison

    return PairedComparison(**{k: comparison[k] for k in ("images", "delta_pts", "lost", "gained", "p_value")}).describe()


def recommend(rows: Sequence[VariantRow], float_accuracy: Optional[float], max_drop: float = 1.0,
              prefer: str = "latency") -> Tuple[Optional[str], str]:
    """Picks the file to ship: the fastest (or smallest) of the files that keep the float accuracy.

    A file keeps the accuracy when it is within ``max_drop`` points of the
    Keras float model, or when McNemar's exact test on the same images finds
    no measurable loss (p >= 0.05): on a small validation split a drop of a
    few images is not evidence of a loss. Latencies are never ranked on noise:
    files whose p50 is within the larger of their measurement noise and
    ``MIN_LATENCY_MARGIN`` of the fastest are a tie (for a benchmark that
    stayed noisy the noise includes its p90/p50 tail; when it is unknown the
    file ties with every other), and the smallest of them is picked; files
    within ``SIZE_TIE`` (5 %) of the smallest size are equally small, and the
    most accurate of those wins (int8 against qat-int8: the file whose
    quantization lost less, not the one a few KB smaller).

    Args:
      rows: measured files.
      float_accuracy: the Keras float accuracy the drop is measured against.
      max_drop: accuracy points a file may lose.
      prefer: 'latency' (lowest p50) or 'size' (fewest bytes) among the files that keep the accuracy.

    Returns:
      (variant, reason in words); (None, reason) when nothing was measured.

    Example:
      >>> recommend(report.rows, report.float_accuracy, max_drop=0.5, prefer="size")
      ('int8', 'smallest file within 0.5 pts of the Keras float accuracy (93.46%) or not measurably worse')
    """
    measured = [r for r in rows if r.accuracy is not None and (prefer == "size" or r.p50_ms is not None)]
    if not measured:
        return None, "no exported file was both evaluated and benchmarked"
    if float_accuracy is None:
        float_accuracy = max(r.accuracy for r in measured)

    def within(row: VariantRow) -> bool:
        # A hair of tolerance: the drop is computed from floats and 1.0 pt must admit exactly 1.0 pt.
        return (float_accuracy - row.accuracy) * 100 <= max_drop + 1e-9

    eligible = [r for r in measured if within(r) or (r.vs_float is not None and not r.measurably_worse)]
    rule = f"within {max_drop:g} pts of the Keras float accuracy ({float_accuracy:.2%})"
    if any(r.vs_float is not None for r in measured):
        rule += " or not measurably worse (McNemar p >= 0.05)"
    if not eligible:
        best = max(measured, key=lambda r: (r.accuracy, -(r.p50_ms or 0.0), -r.size_bytes))
        return best.variant, (f"no file is {rule}; this is the most accurate one. Consider more QAT epochs or a "
                              f"wider backbone")
    if prefer == "size":
        best = _most_accurate_of_the_smallest(eligible)
        return best.variant, f"smallest file {rule}" + _size_tie_words(eligible, best)
    fastest = min(eligible, key=lambda r: (r.p50_ms, r.size_bytes, -r.accuracy))

    def spread(row: VariantRow) -> float:
        # How far apart two measurements of this file can land: the spread of its round medians, and for a
        # benchmark that stayed noisy its run-to-run tail too. A noisy file 30x slower is still slower; one
        # whose spread is unknown ties with everything.
        if row.latency_reliable:
            return row.noise or 0.0
        tail = row.p90_ms / row.p50_ms - 1.0 if row.p90_ms and row.p50_ms else 0.0
        return max(row.noise or 0.0, tail) or math.inf

    def tied(row: VariantRow) -> bool:
        margin = max(MIN_LATENCY_MARGIN, spread(fastest), spread(row))
        return row.p50_ms <= fastest.p50_ms * (1.0 + margin)

    ties = [r for r in eligible if tied(r)]
    best = _most_accurate_of_the_smallest(ties)
    reason = f"fastest (p50) file {rule}"
    if len(ties) > 1:
        noisy = [r.variant for r in ties if not r.latency_reliable]
        why = (f"the latency of {', '.join(noisy)} stayed noisy" if noisy
               else "their p50 latencies are within measurement noise")
        reason += (f"; {', '.join(r.variant for r in ties)} are a tie on speed ({why}), so the smallest of them"
                   + _size_tie_words(ties, best))
    return best.variant, reason


def _equally_small(rows: Sequence[VariantRow]) -> List[VariantRow]:
    smallest = min(r.size_bytes for r in rows)
    return [r for r in rows if r.size_bytes <= smallest * (1.0 + SIZE_TIE)]


def _most_accurate_of_the_smallest(rows: Sequence[VariantRow]) -> VariantRow:
    return max(_equally_small(rows), key=lambda r: (r.accuracy, -r.size_bytes, -(r.p50_ms or 0.0)))


def _size_tie_words(rows: Sequence[VariantRow], best: VariantRow) -> str:
    small = _equally_small(rows)
    if len(small) < 2:
        return ""
    names = ", ".join(r.variant for r in small)
    if len({r.accuracy for r in small}) == 1:
        return f" ({names} are within {SIZE_TIE:.0%} in size and equally accurate)"
    return f" ({names} are within {SIZE_TIE:.0%} in size; {best.variant} is the most accurate)"


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"'{path}' is missing: the {what} stage has not finished. Run `edgetl run` again to complete it.") from None
    except (OSError, ValueError) as e:
        raise RunDirError(f"'{path}' cannot be read ({e}); delete it and run `edgetl run` again to redo the {what} stage.") from None


def build_report(run_dir: Union[str, Path], config: ReportConfig = ReportConfig(),
                 versions: Optional[Dict[str, str]] = None) -> Report:
    """Collects a run's measurements into a Report (reads files only; no TensorFlow).

    Args:
      run_dir: a run directory whose train, export, eval and bench stages finished.
      config: the recommendation rule (``max_drop``, ``prefer``).
      versions: extra version lines (e.g. the training stack's), shown in the report.

    Raises:
      RunDirError: a stage's output is missing or damaged.

    Example:
      >>> print(build_report("runs/flowers").format())
    """
    paths = RunPaths.of(run_dir)
    train = _read_json(paths.train_result, "train")
    manifest = _read_json(paths.manifest, "export")
    record = paths.load_dataset()
    qat_result = _read_json(paths.qat_result, "qat") if paths.qat_result.is_file() else None
    bench = _read_json(paths.bench_results, "bench").get("results", []) if paths.bench_results.is_file() else []
    run_config = {}
    if paths.config.is_file():
        from edgetl.config import load_yaml

        run_config = load_yaml(str(paths.config))
    model_section = run_config.get("model") or {}

    by_file: Dict[str, List[Dict[str, Any]]] = {}
    for result in bench:
        by_file.setdefault(Path(result["model"]).name, []).append(result)
    best = {name: min(results, key=lambda r: r["p50_ms"]) for name, results in by_file.items()}
    reference_name = next((m["name"] for m in manifest["models"] if m["variant"] == REFERENCE_VARIANT), None)
    reference_best = best.get(reference_name)
    float_accuracy = train.get("val_accuracy")

    rows, warnings, notes = [], [], []
    predictions_of: Dict[str, List[int]] = {}
    val_images = 0
    val_labels = [label for _, label in record.val]
    keras_predictions = train.get("val_predictions") or []
    keras_correct = ([p == l for p, l in zip(keras_predictions, val_labels)]
                     if len(keras_predictions) == len(val_labels) else None)
    statistics = _statistics_available(notes)
    float_ci = None
    if statistics and keras_correct:
        from edgetl.stats import wilson_interval

        float_ci = wilson_interval(sum(keras_correct), len(keras_correct))
    for model in manifest["models"]:
        name = model["name"]
        evaluation_file = paths.eval_result(model["variant"])
        accuracy = images = interval = paired = None
        if evaluation_file.is_file():
            evaluation = _read_json(evaluation_file, "eval")
            accuracy = evaluation["top1"]
            images = int(evaluation["images"])
            predictions_of[model["variant"]] = evaluation.get("predictions") or []
            val_images = max(val_images, images)
            if statistics:
                interval, paired = _accuracy_statistics(evaluation, val_labels, keras_correct)
        fastest = best.get(name)
        rows.append(VariantRow(
            variant=model["variant"], file=name, size_bytes=int(model["size_bytes"]), accuracy=accuracy,
            delta_pts=round((accuracy - float_accuracy) * 100, 2) if accuracy is not None and float_accuracy is not None else None,
            p50_ms=fastest["p50_ms"] if fastest else None, p90_ms=fastest["p90_ms"] if fastest else None,
            threads=fastest["threads"] if fastest else None,
            speedup=round(reference_best["p50_ms"] / fastest["p50_ms"], 3) if fastest and reference_best else None,
            agreement=model.get("agreement"), flagged=bool(model.get("flagged")), sha256=model["sha256"],
            images=images, accuracy_ci=interval, vs_float=paired,
            noise=fastest.get("noise") if fastest else None,
            latency_reliable=bool(fastest.get("reliable", True)) if fastest else True,
            min_runtime=model.get("min_runtime_version") or "",
        ))
        warnings.extend(model[key] for key in ("warning", "runtime_warning") if model.get(key))
    from edgetl.stats import split_size_note

    counts: Dict[str, int] = {}
    for label in val_labels:
        counts[record.class_names[label]] = counts.get(record.class_names[label], 0) + 1
    small = split_size_note(len(val_labels), counts, config.max_drop)
    if small:
        notes.append(small)
    orientation_test = train.get("orientation_test")
    if orientation_test:
        notes.append(f"training augmentation: orientation '{orientation_test['orientation']}', decided from the data "
                     f"(a head trained with 90-degree turned copies scored {orientation_test['turned_accuracy']:.2%} on "
                     f"the validation split, without them {orientation_test['upright_accuracy']:.2%}); "
                     f"--orientation upright|any decides it yourself.")
    noisy = [r.variant for r in rows if not r.latency_reliable]
    if noisy:
        notes.append(f"the latency of {', '.join(noisy)} stayed noisy after re-measuring (the host was busy); it is "
                     f"not used to rank. Re-run on a quiet machine for latencies you can compare.")
    recommended, reason = recommend(rows, float_accuracy, config.max_drop, config.prefer)
    qat_vs_ptq = _qat_against_ptq(rows, predictions_of, val_labels) if statistics else None
    sweep = [{"file": Path(r["model"]).name, "threads": r["threads"], "delegate": r["delegate"], "p50_ms": r["p50_ms"],
              "p90_ms": r["p90_ms"], "mean_ms": r["mean_ms"], "runs": r["runs"], "init_ms": r["init_ms"],
              "rounds": r.get("rounds", 1), "noise": r.get("noise", 0.0), "reliable": r.get("reliable", True)}
             for r in bench]
    host = dict(bench[0]["environment"]) if bench else {}
    host.pop("hostname", None)  # the report may be shared; the machine's name is not needed to read it
    all_versions = {"edgetl": __version__}
    all_versions.update(versions or {})
    if bench:
        runtime = bench[0]["runtime"]
        all_versions["tflite runtime"] = f"{runtime['package']} {runtime['version']} ({bench[0]['delegate']})"
    return Report(
        run_dir=str(paths.root),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        data={"path": (run_config.get("data") or {}).get("path", ""), "classes": len(record.class_names),
              "class_names": list(record.class_names), "train_images": len(record.train), "val_images": len(record.val)},
        model={"backbone": manifest.get("backbone"), "alpha": manifest.get("alpha"), "size": manifest.get("input_size"),
               "weights": _describe_weights(train.get("weights") or model_section.get("weights"))},
        float_accuracy=float_accuracy, qat_accuracy=(qat_result or {}).get("qat_accuracy"),
        val_images=val_images or len(record.val), rows=rows, recommended=recommended, reason=reason,
        rule={"max_drop": config.max_drop, "prefer": config.prefer}, sweep=sweep, host=host, versions=all_versions,
        warnings=warnings, float_accuracy_ci=float_ci, notes=notes, qat_vs_ptq=qat_vs_ptq, tuning=_tuning(paths),
    )


def _tuning(paths: RunPaths) -> Optional[Dict[str, Any]]:
    """The ``--tune`` search's trials table, when the run was tuned (RUN/tune/result.json)."""
    from edgetl.tune import load_result

    result = load_result(paths.root)
    if result is None:
        return None
    return {"summary": result.summary(), "headers": list(result.HEADERS), "rows": result.table_rows()}


def _qat_against_ptq(rows: Sequence[VariantRow], predictions_of: Dict[str, List[int]],
                     val_labels: Sequence[int]) -> Optional[Dict[str, Any]]:
    """McNemar's exact test of qat-int8 (candidate) against int8 (reference) on the images both classified."""
    accuracy = {r.variant: r.accuracy for r in rows}
    qat, ptq = predictions_of.get("qat-int8"), predictions_of.get("int8")
    if not qat or not ptq or len(qat) != len(val_labels) or len(ptq) != len(val_labels):
        return None
    comparison = _paired([p == label if p >= 0 else None for p, label in zip(ptq, val_labels)], qat, val_labels)
    if comparison is None:
        return None
    return {**dataclasses.asdict(comparison), "qat_accuracy": accuracy.get("qat-int8"),
            "ptq_accuracy": accuracy.get("int8")}


def _statistics_available(notes: List[str]) -> bool:
    """Whether SciPy is importable; says so in ``notes`` when it is not."""
    try:
        import scipy.stats  # noqa: F401
    except ImportError:
        notes.append("SciPy is not installed, so the report has no confidence intervals or McNemar tests: "
                     "pip install \"edgetl[train]\"")
        return False
    return True


def _accuracy_statistics(evaluation: Dict[str, Any], val_labels: Sequence[int],
                         keras_correct: Optional[Sequence[bool]]) -> Tuple[Optional[Tuple[float, float]], Optional[Dict[str, Any]]]:
    """(Wilson interval, paired comparison with the Keras float model) of one file's evaluation."""
    from edgetl.stats import wilson_interval

    images = int(evaluation["images"])
    correct = int(round(evaluation["top1"] * images))
    interval = wilson_interval(correct, images)
    predictions = evaluation.get("predictions") or []
    if keras_correct is None or len(predictions) != len(val_labels):
        return interval, None
    comparison = _paired(keras_correct, predictions, val_labels)
    if comparison is None:
        return interval, None
    return interval, {**dataclasses.asdict(comparison), "summary": comparison.describe()}


def _paired(reference_correct: Sequence[Optional[bool]], predictions: Sequence[int], val_labels: Sequence[int]):
    """McNemar's exact test of a file's ``predictions`` (-1: not classified) against a reference's per-image
    correctness (None: not classified), on the images both classified; None when there are none."""
    from edgetl.stats import compare_paired

    pairs = [(right, predicted == label) for right, predicted, label in zip(reference_correct, predictions, val_labels)
             if right is not None and predicted >= 0]
    if not pairs:
        return None
    return compare_paired([a for a, _ in pairs], [b for _, b in pairs])


def _describe_weights(weights: Optional[str]) -> str:
    """'random init', 'ImageNet' or the weights file: the report says plainly what training started from."""
    if not weights or str(weights).lower() in ("none", "random"):
        return "random init"
    if str(weights).lower() == "imagenet":
        return "ImageNet"
    return f"weights file {Path(weights).name}"


def write_report(report: Report, plots: bool = True) -> List[Path]:
    """Writes report.md/.json/.csv (atomically) and the plots; returns the files written.

    Plots: ``plots/accuracy_latency.png`` (accuracy vs p50, marker area ~ file
    size), ``plots/confusion_matrix_<variant>.png`` of the recommended file,
    and the training curves ``train`` drew.
    """
    paths = RunPaths.of(report.run_dir)
    written: List[Path] = []
    if plots:
        report.plots = [str(p.relative_to(paths.root)) for p in _plots(report, paths)]
    for path, text in ((paths.report_md, report.to_markdown()), (paths.report_csv, report.to_csv())):
        write_text(path, text)
        written.append(path)
    write_json(paths.report_json, report.to_dict())
    written.append(paths.report_json)
    return written + [paths.root / p for p in report.plots]


def _plots(report: Report, paths: RunPaths) -> List[Path]:
    from edgetl.plots import plot_accuracy_latency, plot_confusion_matrix

    out: List[Path] = []
    points = [(r.variant, r.p50_ms, r.accuracy, r.size_bytes) for r in report.rows if r.p50_ms is not None and r.accuracy is not None]
    if points:
        out.append(plot_accuracy_latency(points, paths.accuracy_latency_plot, report.float_accuracy, report.recommended))
    if report.recommended:
        evaluation = json.loads(paths.eval_result(report.recommended).read_text(encoding="utf-8"))
        rows = [m["name"] for m in evaluation["per_class"]]
        out.append(plot_confusion_matrix(
            evaluation["confusion"], rows, paths.variant_confusion_plot(report.recommended),
            title=f"{report.recommended} file, validation top-1 {evaluation['top1']:.3f}", columns=evaluation["columns"]))
    curves = paths.training_curves
    if curves.is_file():
        out.append(curves)
    return out
