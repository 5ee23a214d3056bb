"""Latency benchmark of ``.tflite`` models: benchmark(models, BenchConfig) -> [BenchResult], sweeping threads and delegates.

Measures what LiteRT's ``benchmark_model`` reports (init, first inference,
warm-up, timed runs with ``time.perf_counter_ns``) plus percentiles,
throughput, peak RSS, model size and the versions of everything involved.
"""

from __future__ import annotations

import csv
import dataclasses
import io
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
      rounds: 1 measures the models one after the other; N > 1 loads every
        model of a (delegate, threads) combination at once and measures them
        interleaved, A B C, B C A, ... for N rounds, each round taking
        ``runs / N`` runs and ``min_seconds / N`` seconds of each model, so a
        load that comes and goes on a busy host hits every model alike.
        Edge TPU delegates always run one model after the other (swapping
        models on one TPU reloads their parameters).
      max_noise: a model's measurement is noisy when the spread of its
        per-round medians, (max - min) / median, is above this, or when its
        p90 is more than ``max_tail`` times its p50.
      max_tail: see ``max_noise``.
      retries: with rounds > 1, noisy measurements are taken again up to
        this many times; each model keeps its least noisy attempt, and one
        still noisy is marked unreliable (``BenchResult.reliable``).
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
    rounds: int = 1
    max_noise: float = 0.15
    max_tail: float = 1.5
    retries: int = 2

    def __post_init__(self):
        for name in ("runs", "warmup_runs", "rounds", "retries"):
            value = getattr(self, name)
            low = 1 if name in ("runs", "rounds") else 0
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"`{name}` must be an integer >= {low}, got {value!r}.")
        if self.max_noise <= 0 or self.max_tail < 1:
            raise ConfigError(f"`max_noise` must be > 0 and `max_tail` >= 1, got {self.max_noise} and {self.max_tail}.")
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
        if self.rounds > 1:
            args += ["--rounds", str(self.rounds)]
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
      rounds: interleaved rounds the timed runs were spread over (1 = one block).
      round_p50_ms: the median of each round.
      noise: spread of the round medians, (max - min) / median (0 with one round).
      reliable: False when the measurement stayed noisy after the retries
        (see ``BenchConfig.max_noise``); its latency should not be used to rank.
      attempts: measurements taken (1 + retries used).
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
    rounds: int = 1
    round_p50_ms: Tuple[float, ...] = ()
    noise: float = 0.0
    reliable: bool = True
    attempts: int = 1

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
            values["round_p50_ms"] = tuple(float(t) for t in data.get("round_p50_ms") or ())
            return cls(**values)
        except (KeyError, TypeError) as e:
            raise ValueError(f"not an edgetl bench result ({e})") from e


_CSV_FIELDS = ("host", "model", "delegate", "threads", "batch", "inputs", "model_size_bytes", "check_ms", "init_ms",
               "first_ms", "warmup_runs", "runs", "wall_seconds", "min_ms", "mean_ms", "std_ms", "p50_ms", "p90_ms",
               "p99_ms", "max_ms", "throughput", "peak_rss_mb", "input", "model_sha256", "edgetl_version", "rounds",
               "noise", "reliable", "attempts")


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
            transform = input_transform(tensor, model.edgetl_metadata, model_name=model.path, standard=input_metadata(model, position))
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
                transform = input_transform(tensor, model.edgetl_metadata, model_name=model.path,
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


class _Session:
    """One loaded model being measured: inputs set, first inference and warm-up done, timed runs on demand."""

    def __init__(self, loaded: LoadedModel, config: BenchConfig, check_seconds: float, host: str,
                 model_label: Optional[str]):
        self.loaded = loaded
        self.config = config
        self.check_seconds = check_seconds
        self.host = host
        self.model_label = model_label or loaded.model.path
        interpreter = loaded.interpreter
        feeds, self.inputs = make_inputs(loaded.model, config.images, config.seed)
        indices = [tensor.index for tensor in loaded.model.inputs]
        for index, tensors in zip(indices, feeds):
            interpreter.set_tensor(index, tensors[0])
        cycling = [(index, tensors) for index, tensors in zip(indices, feeds) if len(tensors) > 1]

        def feed(run: int) -> None:
            for index, tensors in cycling:
                interpreter.set_tensor(index, tensors[run % len(tensors)])

        self.feed = feed if cycling else (lambda run: None)
        self.invoke = interpreter.invoke
        start = time.perf_counter_ns()
        try:
            self.invoke()
        except (RuntimeError, ValueError) as e:  # later runs repeat what the first one did
            raise invoke_error(loaded, e) from e
        self.first_ms = (time.perf_counter_ns() - start) / 1e6
        self.warmups, _ = _run_until(self.invoke, self.feed, config.warmup_runs, config.warmup_seconds,
                                     max(config.warmup_seconds, config.max_seconds), None)
        self.wall = 0.0

    def measure(self, runs: int, min_seconds: float, max_seconds: float) -> List[int]:
        """Timed runs (nanoseconds each) until ``runs`` and ``min_seconds`` are reached or ``max_seconds`` passed."""
        times: List[int] = []
        _, wall = _run_until(self.invoke, self.feed, runs, min_seconds, max_seconds, times)
        self.wall += wall
        return times

    def result(self, rounds: Sequence[Sequence[int]], attempts: int = 1, reliable: bool = True) -> BenchResult:
        """The BenchResult of the timed runs, given round by round."""
        times = [t for block in rounds for t in block]
        stats = _statistics(times)
        loaded = self.loaded
        batch = int(loaded.model.inputs[0].shape[0]) if loaded.model.inputs[0].shape else 1
        round_p50 = tuple(round(float(np.median(block)) / 1e6, 4) for block in rounds) if len(rounds) > 1 else ()
        return BenchResult(
            host=self.host, model=self.model_label, model_size_bytes=loaded.model.size_bytes,
            model_sha256=loaded.model.sha256, input=loaded.model.inputs[0].describe(), inputs=self.inputs, batch=batch,
            delegate=loaded.runtime.delegate, threads=int(loaded.runtime.threads or 0),
            check_ms=round(self.check_seconds * 1e3, 3), init_ms=round(loaded.init_seconds * 1e3, 3),
            first_ms=round(self.first_ms, 3), warmup_runs=self.warmups, runs=len(times), wall_seconds=round(self.wall, 6),
            **{k: round(v, 4) for k, v in stats.items()},
            throughput=round(batch * 1e3 / stats["mean_ms"], 2) if stats["mean_ms"] > 0 else float("inf"),
            peak_rss_mb=peak_rss_mb(), runtime=loaded.runtime, environment=host_fingerprint(),
            times_us=tuple(int(round(t / 1e3)) for t in times) if self.config.keep_times else (),
            rounds=len(rounds), round_p50_ms=round_p50, noise=round(_noise(rounds), 4), reliable=reliable,
            attempts=attempts,
        )


def _noise(rounds: Sequence[Sequence[int]]) -> float:
    """Spread of the per-round medians, (max - min) / median; 0.0 for a single round."""
    if len(rounds) < 2:
        return 0.0
    medians = np.array([np.median(block) for block in rounds], dtype=np.float64)
    middle = float(np.median(medians))
    return float((medians.max() - medians.min()) / middle) if middle > 0 else 0.0


def _noisiness(rounds: Sequence[Sequence[int]], config: BenchConfig) -> float:
    """How far a measurement is past the noise limits: <= 1 is clean, > 1 is noisy."""
    times = np.asarray([t for block in rounds for t in block], dtype=np.float64)
    p50, p90 = np.percentile(times, [50, 90])
    tail = float(p90 / p50) if p50 > 0 else 1.0
    return max(_noise(rounds) / config.max_noise, (tail - 1.0) / (config.max_tail - 1.0) if config.max_tail > 1 else 0.0)


def run_benchmark(loaded: LoadedModel, config: BenchConfig, check_seconds: float = 0.0, host: str = "local",
                  model_label: Optional[str] = None) -> BenchResult:
    """Measures one loaded interpreter: first inference, warm-up, timed runs.

    Args:
      loaded: from ``load_interpreter``.
      config: run counts, durations, inputs (``rounds`` > 1 splits the timed
        runs into rounds, to see how much they move).
      check_seconds: time spent reading/checking the file, to report.
      host: label of the machine.
      model_label: model name to report (default: the loaded path).

    Returns:
      The BenchResult.
    """
    return _measure_alone(_Session(loaded, config, check_seconds, host, model_label), config)


def _per_round(config: BenchConfig) -> Tuple[int, float, float]:
    """(runs, min_seconds, max_seconds) of one round."""
    return -(-config.runs // config.rounds), config.min_seconds / config.rounds, config.max_seconds / config.rounds


def _measure_alone(session: _Session, config: BenchConfig) -> BenchResult:
    """One model's timed runs in ``config.rounds`` consecutive rounds."""
    rounds = [session.measure(*_per_round(config)) for _ in range(config.rounds)]
    return session.result(rounds, reliable=config.rounds == 1 or _noisiness(rounds, config) <= 1.0)


def measure_interleaved(sessions: Sequence[_Session], config: BenchConfig) -> List[BenchResult]:
    """Measures several loaded models in interleaved rounds, re-measuring while any stays noisy.

    Round r runs the models in the order r, r+1, ... (rotated), each for
    ``runs / rounds`` runs and ``min_seconds / rounds`` seconds. After all
    rounds, a model whose round medians spread by more than ``max_noise``, or
    whose p90/p50 exceeds ``max_tail``, is noisy; the whole interleaved
    measurement is repeated up to ``retries`` times, each model keeping its
    least noisy attempt. Models still noisy come back with ``reliable=False``.
    """
    per_round = _per_round(config)
    best: List[Optional[Tuple[float, List[List[int]]]]] = [None] * len(sessions)
    attempts = 0
    for attempts in range(1, config.retries + 2):
        rounds: List[List[List[int]]] = [[] for _ in sessions]
        for round_index in range(config.rounds):
            for offset in range(len(sessions)):
                position = (round_index + offset) % len(sessions)
                rounds[position].append(sessions[position].measure(*per_round))
        for position, measured in enumerate(rounds):
            score = _noisiness(measured, config)
            if best[position] is None or score < best[position][0]:
                best[position] = (score, measured)
        if all(entry[0] <= 1.0 for entry in best):
            break
    return [session.result(entry[1], attempts=attempts, reliable=entry[0] <= 1.0)
            for session, entry in zip(sessions, best)]


def benchmark(models: Sequence[str], config: BenchConfig = BenchConfig(), progress: bool = False,
              host: str = "local") -> List[BenchResult]:
    """Benchmarks every model under every (delegate, threads) combination of ``config``.

    Every file is checked and every (model, delegate) pair validated before
    the first measurement, so a bad input fails in seconds, not mid-sweep.
    With ``config.rounds`` > 1, the models of each (delegate, threads)
    combination are measured interleaved (see ``measure_interleaved``), so a
    busy host slows them alike instead of whichever ran during the load.

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
      ...                     BenchConfig(threads=(1, 4), delegates=("cpu", "xnnpack"), rounds=5))
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
            input_transform(info.inputs[0], info.edgetl_metadata, model_name=str(model))
        checked.append((str(model), data, seconds))
    for spec in specs:
        check_delegate_loads(spec, config.runtime)
    threads_list = config.thread_counts()
    measured: Dict[Tuple[int, int, int], BenchResult] = {}
    bar = None
    total = len(checked) * len(specs) * len(threads_list)
    if progress and total > 1:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="bench", unit="config", leave=False)

    def load(model: str, data: bytes, check_seconds: float, spec: DelegateSpec, threads: int) -> _Session:
        if bar is not None:
            bar.set_postfix_str(f"{Path(model).name} {spec.label} x{threads}", refresh=True)
        loaded = load_interpreter(data, delegate=spec, threads=threads, runtime=config.runtime, name=model)
        return _Session(loaded, config, check_seconds, host, model)

    try:
        for spec_index, spec in enumerate(specs):
            for thread_index, threads in enumerate(threads_list):
                if config.rounds > 1 and spec.kind != "edgetpu":
                    sessions = [load(*item, spec, threads) for item in checked]
                    for model_index, result in enumerate(measure_interleaved(sessions, config)):
                        measured[(model_index, spec_index, thread_index)] = result
                    del sessions  # release the interpreters before the next combination
                    if bar is not None:
                        bar.update(len(checked))
                    continue
                for model_index, item in enumerate(checked):
                    # One session at a time: the interpreter (and the Edge TPU) is released before the next.
                    measured[(model_index, spec_index, thread_index)] = _measure_alone(load(*item, spec, threads), config)
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return [measured[key] for key in sorted(measured)]


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
    rounds = any(r.rounds > 1 for r in results)
    headers = (["host"] if many_hosts else []) + ["model", "delegate", "thr", "MB", "init ms", "first ms", "mean ms",
                                                  "std", "p50", "p90", "p99", "min", "inf/s", "RSS MB"]
    headers += ["noise %"] if rounds else []
    rows = []
    for r in results:
        row = ([r.host] if many_hosts else []) + [
            r.model_name, r.delegate, r.threads, round(r.model_size_bytes / 1e6, 2), round(r.init_ms, 1), round(r.first_ms, 2),
            round(r.mean_ms, 2), round(r.std_ms, 2), round(r.p50_ms, 2), round(r.p90_ms, 2), round(r.p99_ms, 2),
            round(r.min_ms, 2), round(r.throughput, 1), r.peak_rss_mb,
        ]
        if rounds:
            row.append(f"{r.noise * 100:.1f}" + ("" if r.reliable else " noisy"))
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
    if rounds:
        lines.append("noise: spread of the per-round medians of the interleaved rounds, (max - min) / median; "
                     "'noisy' rows stayed above the limit after re-measuring: do not rank on them")
    return "\n".join(lines)
