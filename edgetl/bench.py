"""Latency benchmark of ``.tflite`` models: benchmark(models, BenchConfig) -> [BenchResult], sweeping threads and delegates.

Measures what LiteRT's ``benchmark_model`` reports (init, first inference,
warm-up, timed runs with ``time.perf_counter_ns``) plus percentiles,
throughput, peak RSS, model size and the versions of everything involved.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgetl import __version__
from edgetl.errors import ConfigError, DatasetError, EdgetlError
from edgetl.images import IMAGE_EXTENSIONS, ImageReadError, load_image
from edgetl.modelfile import ModelInfo, check_image_input, input_metadata, parse_model, read_model
from edgetl.runtime.environment import host_fingerprint, peak_rss_mb, usable_cores
from edgetl.runtime.interpreter import (
    DelegateSpec,
    LoadedModel,
    RuntimeInfo,
    check_delegate_fits,
    check_delegate_loads,
    delegate_specs,
    find_runtime,
    invoke_error,
    load_interpreter,
)
from edgetl.runtime.tensors import input_transform


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What ``edgetl bench`` sweeps and how long it measures.

    Run counts follow ``benchmark_model``: at least ``runs`` runs *and* at
    least ``min_seconds``, but never past ``max_seconds`` (the same for the
    warm-up with ``warmup_runs``/``warmup_seconds``).

    Attributes:
      threads: interpreter thread counts to sweep; empty = the usable cores.
      delegates: '--delegate' values to sweep: cpu (XNNPACK off), xnnpack,
        edgetpu[:usb|:pci[:N]] or a delegate library path.
      delegate_options: options passed to Edge TPU / external delegates.
      runtime: 'auto', 'litert', 'tflite-runtime' or 'tensorflow'.
      runs: minimum number of timed runs.
      min_seconds: minimum duration of the timed runs.
      max_seconds: cap on the duration of the timed runs.
      warmup_runs: minimum number of untimed runs after the first inference.
      warmup_seconds: minimum warm-up duration.
      images: image files or folders fed in turn (set outside the timed
        call); empty = one random input, set once, like benchmark_model.
      seed: seed of the random inputs.
      keep_times: keep every run's latency in the result (``times_us``).
    """

    threads: Tuple[int, ...] = ()
    delegates: Tuple[str, ...] = ("xnnpack",)
    delegate_options: Tuple[Tuple[str, str], ...] = ()
    runtime: str = "auto"
    runs: int = 50
    min_seconds: float = 1.0
    max_seconds: float = 150.0
    warmup_runs: int = 1
    warmup_seconds: float = 0.5
    images: Tuple[str, ...] = ()
    seed: int = 0
    keep_times: bool = True

    def __post_init__(self):
        for name in ("runs", "warmup_runs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (1 if name == "runs" else 0):
                raise ConfigError(f"`{name}` must be an integer >= {1 if name == 'runs' else 0}, got {value!r}.")
        for name in ("min_seconds", "max_seconds", "warmup_seconds"):
            if getattr(self, name) < 0:
                raise ConfigError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if self.max_seconds < self.min_seconds:
            raise ConfigError(f"`max_seconds` ({self.max_seconds}) is below `min_seconds` ({self.min_seconds}); raise --max-seconds.")
        bad = [t for t in self.threads if not isinstance(t, int) or t < 1]
        if bad:
            raise ConfigError(f"`threads` must be integers >= 1, got {bad}; write e.g. --threads 1,2,4.")
        if not self.delegates:
            raise ConfigError("`delegates` is empty; pass e.g. --delegate xnnpack.")

    def thread_counts(self) -> Tuple[int, ...]:
        """The thread counts to sweep, with the default resolved to this host's usable cores."""
        return tuple(dict.fromkeys(self.threads)) or (usable_cores(),)

    def to_args(self) -> List[str]:
        """The ``edgetl bench`` options that reproduce this config (used to run it on a remote host)."""
        args = ["--delegate", ",".join(self.delegates), "--runtime", self.runtime, "--runs", str(self.runs),
                "--min-seconds", repr(self.min_seconds), "--max-seconds", repr(self.max_seconds),
                "--warmup", str(self.warmup_runs), "--warmup-seconds", repr(self.warmup_seconds), "--seed", str(self.seed)]
        if self.threads:
            args += ["--threads", ",".join(str(t) for t in self.threads)]
        for key, value in self.delegate_options:
            args += ["--delegate-option", f"{key}={value}"]
        if not self.keep_times:
            args.append("--no-times")
        return args


@dataclasses.dataclass(frozen=True)
class BenchResult:
    """One (host, model, delegate, threads) measurement. Times in milliseconds.

    Attributes:
      host: 'local' or the SSH target it ran on.
      model: the model file as given on the command line.
      model_size_bytes: file size.
      model_sha256: file digest (the same model on every host).
      input: the first input, e.g. 'uint8[1,224,224,3] q=(0.0078125, 128)'.
      inputs: 'random' or 'images:N'.
      batch: batch size of one invoke.
      delegate: delegate label.
      threads: interpreter threads.
      check_ms: reading and checking the file (edgetl's own checks).
      init_ms: interpreter construction, delegate and tensor allocation.
      first_ms: the first inference (includes lazy initialisation).
      warmup_runs: untimed runs after the first inference.
      runs: timed runs.
      wall_seconds: duration of the timed phase, loop included.
      min_ms: fastest run.
      mean_ms: mean run.
      std_ms: standard deviation of the runs.
      p50_ms: median.
      p90_ms: 90th percentile.
      p99_ms: 99th percentile.
      max_ms: slowest run.
      throughput: inferences (images) per second, batch / mean.
      peak_rss_mb: the process's peak resident memory so far (MB).
      runtime: runtime, delegate library and versions.
      environment: host fingerprint (OS, CPU, board, cores, Python).
      edgetl_version: edgetl version that measured it.
      times_us: every timed run in microseconds (empty unless kept).
    """

    host: str
    model: str
    model_size_bytes: int
    model_sha256: str
    input: str
    inputs: str
    batch: int
    delegate: str
    threads: int
    check_ms: float
    init_ms: float
    first_ms: float
    warmup_runs: int
    runs: int
    wall_seconds: float
    min_ms: float
    mean_ms: float
    std_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    throughput: float
    peak_rss_mb: Optional[float]
    runtime: RuntimeInfo
    environment: Dict[str, Any]
    edgetl_version: str = __version__
    times_us: Tuple[int, ...] = ()

    @property
    def model_name(self) -> str:
        """The model file name without folders."""
        return Path(self.model).name

    def to_dict(self, times: bool = True) -> Dict[str, Any]:
        """JSON-ready dictionary; ``times=False`` leaves out the per-run latencies."""
        data = dataclasses.asdict(self)
        data["runtime"] = self.runtime.to_dict()
        data["times_us"] = list(self.times_us) if times else []
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "BenchResult":
        """Rebuilds a result from ``to_dict`` output (e.g. a remote host's JSON).

        Raises:
          ValueError: fields are missing or of the wrong kind.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        runtime_fields = {f.name for f in dataclasses.fields(RuntimeInfo)}
        try:
            values["runtime"] = RuntimeInfo(**{k: v for k, v in dict(data["runtime"]).items() if k in runtime_fields})
            values["times_us"] = tuple(int(t) for t in data.get("times_us") or ())
            return cls(**values)
        except (KeyError, TypeError) as e:
            raise ValueError(f"not an edgetl bench result ({e})") from e


_CSV_FIELDS = ("host", "model", "delegate", "threads", "batch", "inputs", "model_size_bytes", "check_ms", "init_ms",
               "first_ms", "warmup_runs", "runs", "wall_seconds", "min_ms", "mean_ms", "std_ms", "p50_ms", "p90_ms",
               "p99_ms", "max_ms", "throughput", "peak_rss_mb", "input", "model_sha256", "edgetl_version")


def _statistics(times_ns: Sequence[int]) -> Dict[str, float]:
    array = np.asarray(times_ns, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(array, [50, 90, 99])
    return {"min_ms": float(array.min()), "mean_ms": float(array.mean()), "std_ms": float(array.std()),
            "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "max_ms": float(array.max())}


def find_images(sources: Sequence[str]) -> List[Path]:
    """Image files named in ``sources`` (files, or folders searched recursively), in order.

    Raises:
      DatasetError: a source does not exist, or no image is found.
    """
    files: List[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()))
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise DatasetError(f"--images '{source}' is not a regular file or folder (a pipe, socket or device); "
                               f"pass image files or a folder of images.")
        else:
            raise DatasetError(f"--images '{source}' does not exist; pass image files or a folder of images.")
    if not files:
        raise DatasetError(f"No images found in {', '.join(sources)}; pass image files "
                           f"({', '.join(IMAGE_EXTENSIONS)}) or a folder of them.")
    return files


def make_inputs(model: ModelInfo, images: Sequence[str], seed: int) -> Tuple[List[List[np.ndarray]], str]:
    """Input tensors for every model input: decoded images (first input) or random data.

    Returns:
      (feeds, description): ``feeds[i]`` holds the tensors for input i, used in
      turn; the description is 'random' or 'images:N'.

    Raises:
      DatasetError: no usable image.
      ModelFileError: images given for a model that does not take RGB images.
    """
    rng = np.random.default_rng(seed)
    feeds: List[List[np.ndarray]] = []
    for position, tensor in enumerate(model.inputs):
        shape = tuple(max(d, 1) for d in tensor.shape)
        if position == 0 and images:
            transform = input_transform(tensor, model.card, model_name=model.path, standard=input_metadata(model, position))
            tensors = []
            for path in find_images(images):
                try:
                    pixels = load_image(path, transform.size)
                except ImageReadError as e:
                    raise DatasetError(f"Image '{e.path}' cannot be used: {e.reason}. Remove it from --images.") from None
                tensors.append(np.repeat(transform(pixels), shape[0], axis=0))
            feeds.append(tensors)
            continue
        if len(shape) == 4 and shape[3] == 3 and tensor.dtype in ("float32", "uint8", "int8"):
            try:
                transform = input_transform(tensor, model.card, model_name=model.path,
                                            standard=input_metadata(model, position))
                feeds.append([transform(rng.integers(0, 256, size=shape, dtype=np.uint8))])
                continue
            except EdgetlError:
                pass  # not a usable image input: plain random data below
        if tensor.dtype.startswith("float"):
            feeds.append([rng.standard_normal(shape).astype(tensor.dtype)])
        elif tensor.dtype == "bool":
            feeds.append([rng.integers(0, 2, size=shape).astype(bool)])
        else:
            info = np.iinfo(tensor.dtype)
            feeds.append([rng.integers(max(info.min, -128), min(info.max, 255) + 1, size=shape).astype(tensor.dtype)])
    return feeds, (f"images:{len(feeds[0])}" if images else "random")


def _run_until(invoke: Callable[[], None], feed: Callable[[int], None], runs: int, min_seconds: float, max_seconds: float,
               record: Optional[List[int]]) -> Tuple[int, float]:
    """Invokes until ``runs`` and ``min_seconds`` are both reached, or ``max_seconds`` passed; times only ``invoke``."""
    clock = time.perf_counter_ns
    start = clock()
    min_end = start + int(min_seconds * 1e9)
    max_end = start + int(max_seconds * 1e9)
    count = 0
    now = start
    while count < runs or now < min_end:
        if now >= max_end and count > 0:
            break
        feed(count)
        before = clock()
        invoke()
        now = clock()
        if record is not None:
            record.append(now - before)
        count += 1
    return count, (clock() - start) / 1e9


def run_benchmark(loaded: LoadedModel, config: BenchConfig, check_seconds: float = 0.0, host: str = "local",
                  model_label: Optional[str] = None) -> BenchResult:
    """Measures one loaded interpreter: first inference, warm-up, timed runs.

    Args:
      loaded: from ``load_interpreter``.
      config: run counts, durations, inputs.
      check_seconds: time spent reading/checking the file, to report.
      host: label of the machine.
      model_label: model name to report (default: the loaded path).

    Returns:
      The BenchResult.
    """
    interpreter = loaded.interpreter
    feeds, inputs = make_inputs(loaded.model, config.images, config.seed)
    indices = [tensor.index for tensor in loaded.model.inputs]
    for index, tensors in zip(indices, feeds):
        interpreter.set_tensor(index, tensors[0])
    cycling = [(index, tensors) for index, tensors in zip(indices, feeds) if len(tensors) > 1]

    def feed(run: int) -> None:
        for index, tensors in cycling:
            interpreter.set_tensor(index, tensors[run % len(tensors)])

    def no_feed(run: int) -> None:
        return None

    invoke = interpreter.invoke
    start = time.perf_counter_ns()
    try:
        invoke()
    except (RuntimeError, ValueError) as e:  # later runs repeat what the first one did
        raise invoke_error(loaded, e) from e
    first_ms = (time.perf_counter_ns() - start) / 1e6
    warmups, _ = _run_until(invoke, feed if cycling else no_feed, config.warmup_runs, config.warmup_seconds,
                            max(config.warmup_seconds, config.max_seconds), None)
    times: List[int] = []
    runs, wall = _run_until(invoke, feed if cycling else no_feed, config.runs, config.min_seconds, config.max_seconds, times)
    stats = _statistics(times)
    batch = int(loaded.model.inputs[0].shape[0]) if loaded.model.inputs[0].shape else 1
    return BenchResult(
        host=host, model=model_label or loaded.model.path, model_size_bytes=loaded.model.size_bytes,
        model_sha256=loaded.model.sha256, input=loaded.model.inputs[0].describe(), inputs=inputs, batch=batch,
        delegate=loaded.runtime.delegate, threads=int(loaded.runtime.threads or 0),
        check_ms=round(check_seconds * 1e3, 3), init_ms=round(loaded.init_seconds * 1e3, 3), first_ms=round(first_ms, 3),
        warmup_runs=warmups, runs=runs, wall_seconds=round(wall, 6),
        **{k: round(v, 4) for k, v in stats.items()},
        throughput=round(batch * 1e3 / stats["mean_ms"], 2) if stats["mean_ms"] > 0 else float("inf"),
        peak_rss_mb=peak_rss_mb(), runtime=loaded.runtime, environment=host_fingerprint(),
        times_us=tuple(int(round(t / 1e3)) for t in times) if config.keep_times else (),
    )


def benchmark(models: Sequence[str], config: BenchConfig = BenchConfig(), progress: bool = False,
              host: str = "local") -> List[BenchResult]:
    """Benchmarks every model under every (delegate, threads) combination of ``config``.

    Every file is checked and every (model, delegate) pair validated before
    the first measurement, so a bad input fails in seconds, not mid-sweep.

    Args:
      models: ``.tflite`` files.
      config: the sweep and run counts.
      progress: show a progress bar over the combinations (on stderr).
      host: label of this machine in the results.

    Returns:
      One BenchResult per (model, delegate, threads), in that nesting order.

    Raises:
      ModelFileError: a file is missing, empty, truncated or not TFLite.
      DelegateError: a delegate library cannot be loaded, or an Edge
        TPU-compiled model is benchmarked without the Edge TPU delegate.
      DatasetError: ``config.images`` holds no usable image.
      ConfigError: bad delegate/runtime names.

    Example:
      >>> results = benchmark(["model_fp32.tflite", "model_int8.tflite"],
      ...                     BenchConfig(threads=(1, 4), delegates=("cpu", "xnnpack")))
      >>> print(format_results(results))
    """
    if not models:
        raise ConfigError("No model given; pass one or more .tflite files.")
    specs = delegate_specs(config.delegates, config.delegate_options)
    find_runtime(config.runtime)
    checked: List[Tuple[str, bytes, float]] = []
    for model in models:
        start = time.perf_counter()
        data = read_model(model)
        info = parse_model(data, str(model))
        seconds = time.perf_counter() - start
        for spec in specs:
            check_delegate_fits(info, spec)
        if config.images:
            check_image_input(info)
            input_transform(info.inputs[0], info.card, model_name=str(model))
        checked.append((str(model), data, seconds))
    for spec in specs:
        check_delegate_loads(spec, config.runtime)
    combos: List[Tuple[Tuple[str, bytes, float], DelegateSpec, int]] = list(itertools.product(checked, specs, config.thread_counts()))
    results: List[BenchResult] = []
    bar = None
    if progress and len(combos) > 1:
        from tqdm import tqdm

        bar = tqdm(total=len(combos), desc="bench", unit="config", leave=False)
    try:
        for (model, data, check_seconds), spec, threads in combos:
            if bar is not None:
                bar.set_postfix_str(f"{Path(model).name} {spec.label} x{threads}", refresh=True)
            loaded = load_interpreter(data, delegate=spec, threads=threads, runtime=config.runtime, name=model)
            try:
                results.append(run_benchmark(loaded, config, check_seconds, host=host, model_label=model))
            finally:
                del loaded  # release the interpreter (and the Edge TPU) before the next combination
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return results


def results_json(results: Sequence[BenchResult], times: bool = True) -> Dict[str, Any]:
    """The ``--json`` document: edgetl version and one entry per result."""
    return {"edgetl_version": __version__, "results": [r.to_dict(times=times) for r in results]}


def results_csv(results: Sequence[BenchResult]) -> str:
    """The ``--csv`` text: one row per result with versions flattened into columns."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    extra = ("runtime", "runtime_version", "delegate_library", "delegate_version", "os", "cpu", "board", "cores", "python")
    writer.writerow(_CSV_FIELDS + extra)
    for result in results:
        row = [getattr(result, name) for name in _CSV_FIELDS]
        env = result.environment
        row += [result.runtime.package, result.runtime.version, result.runtime.delegate_library, result.runtime.delegate_version,
                env.get("os", ""), env.get("cpu", ""), env.get("board", ""), env.get("cores", ""), env.get("python", "")]
        writer.writerow(["" if value is None else value for value in row])
    return buffer.getvalue()


def format_results(results: Sequence[BenchResult]) -> str:
    """Aligned table of results (one row per measurement), then one line per host with its versions."""
    from edgetl._table import format_table

    many_hosts = len({r.host for r in results}) > 1 or any(r.host != "local" for r in results)
    headers = (["host"] if many_hosts else []) + ["model", "delegate", "thr", "MB", "init ms", "first ms", "mean ms",
                                                  "std", "p50", "p90", "p99", "min", "inf/s", "RSS MB"]
    rows = []
    for r in results:
        row = ([r.host] if many_hosts else []) + [
            r.model_name, r.delegate, r.threads, round(r.model_size_bytes / 1e6, 2), round(r.init_ms, 1), round(r.first_ms, 2),
            round(r.mean_ms, 2), round(r.std_ms, 2), round(r.p50_ms, 2), round(r.p90_ms, 2), round(r.p99_ms, 2),
            round(r.min_ms, 2), round(r.throughput, 1), r.peak_rss_mb,
        ]
        rows.append(row)
    lines = format_table(headers, rows).splitlines()
    seen = set()
    for r in results:
        env = r.environment
        key = (r.host, r.runtime.package, r.runtime.version, r.runtime.delegate_library)
        if key in seen:
            continue
        seen.add(key)
        machine = env.get("board") or env.get("cpu", "?")
        library = f", {Path(r.runtime.delegate_library).name} {r.runtime.delegate_version}".rstrip() if r.runtime.delegate_library else ""
        lines.append(f"{r.host}: {machine}, {env.get('usable_cores', env.get('cores', '?'))} cores, {env.get('os', '?')} "
                     f"{env.get('machine', '')}, {env.get('python', '?')}, {r.runtime.package} {r.runtime.version}{library}, "
                     f"edgetl {r.edgetl_version}")
    runs = sorted({r.runs for r in results})
    lines.append(f"timed runs per row: {runs[0]}" + (f"-{runs[-1]}" if len(runs) > 1 else "")
                 + f"; inputs: {results[0].inputs if results else '-'}; times in ms")
    return "\n".join(lines)
