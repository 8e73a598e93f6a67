"""Command line: ``percepnet-relay COMMAND ...``.

Each command is a ``_add_<command>`` function that registers its options and a handler; the
handlers only parse, call into ``dsp``/``service``/``loadtest`` and print. Bad input ends with
one ``error: ...`` line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

import numpy as np

from service.audio_files import (
    AudioClip,
    AudioFileError,
    check_output_path,
    check_same_timing,
    from_48k,
    output_format,
    prepare_output_folder,
    read_audio,
    to_48k,
    write_audio,
)

if TYPE_CHECKING:
    from service.settings import Settings


PROG = "percepnet-relay"
EXIT_OK = 0
EXIT_BAD_INPUT = 2  # also argparse's status for usage errors
EXIT_INTERRUPTED = 130
WARMUP_SECONDS = 0.1  # enough audio to run every numba kernel once before timing

Handler = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """A one-line, user-facing failure of a command (printed as ``error: <message>``)."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one ``error:`` line too."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command."""
    parser = _Parser(
        prog=PROG,
        description="Noise and reverberation removal (PercepNet) for files and WebRTC rooms.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_denoise(commands)
    _add_oracle(commands)
    _add_eval(commands)
    _add_bench(commands)
    _add_serve(commands)
    _add_token(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(arguments)
    except (AudioFileError, CommandError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _dispatch(arguments: list[str]) -> int:
    if arguments[:1] == ["eval"]:  # its options belong to model.evaluate's own parser
        return _run_eval(argparse.Namespace(options=arguments[1:]))
    parser = build_parser()
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    handler: Handler = args.handler
    return handler(args)


# --- denoise ----------------------------------------------------------------------------------


def _add_denoise(commands: argparse._SubParsersAction[_Parser]) -> None:
    parser = commands.add_parser(
        "denoise",
        help="remove noise and reverberation from audio files with the trained model",
        description="Enhance each INPUT (a file, or a folder searched recursively) with the "
        "shipped int8 model. Any rate and channel count; each channel is enhanced on its own; "
        "outputs keep the input's length, rate, channels and format, delay compensated.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or folders")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="output file (one input file), else a folder: each output keeps its input's path "
        "below the inputs' common folder; files already under it are not inputs",
    )
    parser.add_argument(
        "--atten-lim-db",
        type=float,
        default=None,
        metavar="DB",
        help="attenuate no band by more than DB (mixes the noisy signal back)",
    )
    parser.add_argument("--no-postfilter", action="store_true", help="skip the postfilter")
    parser.add_argument(
        "--prime-seconds",
        type=float,
        default=0.0,
        metavar="S",
        help="let the network hear each file's first S seconds (1 is a good value) before "
        "enhancing it from the start: speech at the very start is kept, and so is more of "
        "the background (default 0: an empty state, as a live stream through the relay has)",
    )
    parser.add_argument("--model", default=None, help="ONNX model (default: the shipped int8)")
    parser.set_defaults(handler=_run_denoise)


def _run_denoise(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from model.runtime import DEFAULT_MODEL, ModelFileError, ModelRuntime
    from service.denoise import denoise_clip, plan_jobs

    if args.atten_lim_db is not None and not (
        np.isfinite(args.atten_lim_db) and args.atten_lim_db >= 0
    ):
        raise CommandError(f"--atten-lim-db must be a number of dB >= 0, got {args.atten_lim_db}")
    prime_seconds = args.prime_seconds
    if not (np.isfinite(prime_seconds) and prime_seconds >= 0):
        raise CommandError(f"--prime-seconds must be a number of seconds >= 0, got {prime_seconds}")
    jobs = plan_jobs(args.inputs, args.output)
    clips = [read_audio(job.source) for job in jobs]  # fail on a bad file before any work
    for job, clip in zip(jobs, clips, strict=True):
        output_format(job.target, like=clip)
    try:
        runtime = ModelRuntime(args.model or DEFAULT_MODEL)
    except ModelFileError as exc:
        raise CommandError(str(exc)) from exc
    for folder in sorted({job.target.parent for job in jobs}):
        prepare_output_folder(folder)
    postfilter = not args.no_postfilter
    total_audio_s = sum(clip.seconds for clip in clips)
    show_progress = len(jobs) > 1 or total_audio_s > 30.0
    processing_s = 0.0
    clipped = 0
    for job, clip in tqdm(
        list(zip(jobs, clips, strict=True)), disable=not show_progress, unit="file", desc="denoise"
    ):
        start = time.perf_counter()
        enhanced = denoise_clip(clip, runtime, postfilter, args.atten_lim_db, prime_seconds)
        processing_s += time.perf_counter() - start
        clipped += write_audio(job.target, enhanced, clip.sample_rate_hz, like=clip)
        if not show_progress:
            print(f"{job.source} -> {job.target}")
    print(
        f"real-time factor: {processing_s / max(total_audio_s, 1e-9):.4f} "
        f"({processing_s:.2f} s for {total_audio_s:.2f} s of audio in {len(jobs)} file(s); "
        "first-call JIT compilation included)"
    )
    if clipped:
        print(f"warning: {clipped} output samples clipped to full scale", file=sys.stderr)
    return EXIT_OK


# --- oracle -----------------------------------------------------------------------------------


def _add_oracle(commands: argparse._SubParsersAction[_Parser]) -> None:
    parser = commands.add_parser(
        "oracle",
        help="enhance a noisy file with ideal gains computed from its clean source",
        description="Enhance NOISY with the oracle gains and comb strengths that would turn it "
        "into CLEAN: the quality ceiling of the DSP chain. Each channel is processed on its "
        "own at 48 kHz; the output has the rate, length, channels and format of NOISY.",
    )
    parser.add_argument("noisy", help="noisy audio file (any rate, any channel count)")
    parser.add_argument(
        "clean", help="clean source of NOISY: same rate and length, same channel count or mono"
    )
    parser.add_argument("-o", "--output", required=True, help="enhanced file to write")
    parser.add_argument("--no-postfilter", action="store_true", help="skip the postfilter")
    parser.add_argument("--no-comb", action="store_true", help="zero the comb-filter strengths")
    parser.set_defaults(handler=_run_oracle)


def enhance_clip_with_oracle(
    noisy: AudioClip, clean: AudioClip, postfilter: bool = True, use_comb: bool = True
) -> np.ndarray:
    """Oracle-enhance every channel of ``noisy`` (a mono ``clean`` serves all channels).

    Returns float64 ``[frames, channels]`` at the rate and length of ``noisy``.
    """
    from dsp.offline import enhance_with_oracle

    check_same_timing(noisy, clean)
    if clean.channels not in (1, noisy.channels):
        raise AudioFileError(
            f"channel counts differ: {noisy.path} has {noisy.channels}, {clean.path} has "
            f"{clean.channels} (the clean file must have as many channels or be mono)"
        )
    noisy_48k, clean_48k = to_48k(noisy), to_48k(clean)
    enhanced_48k = np.empty_like(noisy_48k)
    for channel in range(noisy.channels):
        enhanced_48k[:, channel] = enhance_with_oracle(
            noisy_48k[:, channel],
            clean_48k[:, min(channel, clean.channels - 1)],
            postfilter=postfilter,
            use_comb=use_comb,
        )
    return from_48k(enhanced_48k, noisy.sample_rate_hz, noisy.frames)


def _warm_up_oracle(postfilter: bool, use_comb: bool) -> float:
    """Load (or compile) the numba kernels so that the timed run measures steady speed."""
    from dsp.constants import SAMPLE_RATE_HZ
    from dsp.offline import enhance_with_oracle

    rng = np.random.default_rng(0)
    noise = 0.1 * rng.standard_normal(int(WARMUP_SECONDS * SAMPLE_RATE_HZ))
    start = time.perf_counter()
    enhance_with_oracle(noise, 0.5 * noise, postfilter=postfilter, use_comb=use_comb)
    return time.perf_counter() - start


def _describe(clip: AudioClip) -> str:
    return (
        f"{clip.path} ({clip.sample_rate_hz} Hz, {clip.channels} ch, {clip.seconds:.3f} s, "
        f"{clip.format}/{clip.subtype})"
    )


def _run_oracle(args: argparse.Namespace) -> int:
    postfilter, use_comb = not args.no_postfilter, not args.no_comb
    noisy = read_audio(args.noisy)
    clean = read_audio(args.clean)
    output = check_output_path(args.output, [noisy.path, clean.path])
    warmup_s = _warm_up_oracle(postfilter, use_comb)
    start = time.perf_counter()
    enhanced = enhance_clip_with_oracle(noisy, clean, postfilter, use_comb)
    processing_s = time.perf_counter() - start
    clipped = write_audio(output, enhanced, noisy.sample_rate_hz, like=noisy)
    written = read_audio(output)
    print(f"noisy:  {_describe(noisy)}")
    print(f"clean:  {_describe(clean)}")
    print(f"output: {_describe(written)}")
    print(
        f"real-time factor: {processing_s / noisy.seconds:.4f} ({processing_s:.3f} s of "
        f"processing for {noisy.seconds:.3f} s of audio, {noisy.channels} ch; resampling "
        f"included; file I/O and {warmup_s:.2f} s of JIT warm-up excluded)"
    )
    if clipped:
        print(f"warning: {clipped} output samples clipped to full scale", file=sys.stderr)
    return EXIT_OK


# --- eval -------------------------------------------------------------------------------------


def _add_eval(commands: argparse._SubParsersAction[_Parser]) -> None:
    parser = commands.add_parser(
        "eval",
        help="dev-set table: this model beside RNNoise, WebRTC NS and the noisy input",
        description="Runs `python -m model.evaluate` with the given options (see its --help); "
        "needs the 'eval' extra and ../shared/data.",
        add_help=False,
    )
    parser.add_argument("options", nargs=argparse.REMAINDER)
    parser.set_defaults(handler=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    try:
        from model import evaluate

        return evaluate.main(args.options)
    except ModuleNotFoundError as exc:  # a plain install: the metrics' packages are missing
        raise CommandError(
            f"'eval' needs the eval extra (pip install 'percepnet-relay[eval]'): {exc}"
        ) from exc


# --- bench ------------------------------------------------------------------------------------


def _add_bench(commands: argparse._SubParsersAction[_Parser]) -> None:
    from loadtest import bench_dsp

    parser = commands.add_parser("bench", help="benchmarks (not tests)")
    targets = parser.add_subparsers(dest="target", required=True, metavar="TARGET")
    dsp = targets.add_parser(
        "dsp",
        help="per-hop cost of the DSP path against RNNoise",
        description=bench_dsp.__doc__.splitlines()[0] if bench_dsp.__doc__ else None,
    )
    bench_dsp.add_arguments(dsp)
    dsp.set_defaults(handler=_run_bench_dsp)


def _run_bench_dsp(args: argparse.Namespace) -> int:
    from loadtest import bench_dsp

    try:
        bench_dsp.run_from_args(args)
    except OSError as exc:  # --json could not be written
        raise CommandError(f"cannot write {args.json}: {exc.strerror or exc}") from exc
    return EXIT_OK


# --- serve and token --------------------------------------------------------------------------


def _add_serve(commands: argparse._SubParsersAction[_Parser]) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the WebRTC relay and its control plane",
        description="Serve rooms over WebRTC with per-speaker enhancement. Every setting can "
        "also come from a PNR_* environment variable (see README); options here win.",
    )
    parser.add_argument("--host", help="address to listen on (PNR_HOST, default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="HTTP port (PNR_PORT, default 8080)")
    parser.add_argument("--model", help="exported model (PNR_MODEL_PATH, default: shipped int8)")
    parser.add_argument("--workers", type=int, help="enhancement threads (PNR_WORKER_THREADS)")
    parser.add_argument(
        "--processes",
        type=int,
        help="relay nodes on ports PORT..PORT+N-1 sharing one directory (PNR_PROCESSES; "
        "default 0: one per usable core, each pinned to its own)",
    )
    parser.add_argument("--log-format", choices=["plain", "json"], help="PNR_LOG_FORMAT")
    parser.set_defaults(handler=_run_serve)


_SERVE_OPTIONS = {  # setting: the serve option that overrides it
    "host": "--host",
    "port": "--port",
    "model_path": "--model",
    "worker_threads": "--workers",
    "processes": "--processes",
    "log_format": "--log-format",
}


def _load_settings(overrides: dict[str, object] | None = None) -> Settings:
    """Settings from the PNR_* variables and ``overrides``; a bad value is a CommandError
    naming the variable (or the option) it came from."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from service.settings import Settings

    overrides = overrides or {}
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except SettingsError as exc:  # a value that should be JSON and is not
        named = re.search(r'field "(\w+)"', str(exc))
        name = f"PNR_{named[1].upper()}" if named else "a PNR_* variable"
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise CommandError(f"{name} is not valid JSON{cause}") from exc
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field, *inner = [str(part) for part in error["loc"]] or ["settings"]
            known = Settings.model_fields.get(field)
            message = str(error["msg"]).removeprefix("Value error, ")
            if known is None:  # a check across several settings
                problems.append(message)
                continue
            source = _SERVE_OPTIONS[field] if field in overrides else f"PNR_{field.upper()}"
            where = ".".join([source, *inner])
            value = error.get("input")
            plain = "Secret" not in str(known.annotation) and isinstance(value, str | int | float)
            problems.append(f"{where}: {message}" + (f" (got {value!r})" if plain else ""))
        raise CommandError(f"bad settings: {'; '.join(problems)}") from exc


def _run_serve(args: argparse.Namespace) -> int:
    from model.runtime import ModelFileError, ModelRuntime
    from service.server import serve

    overrides = {
        field: getattr(args, option[2:].replace("-", "_"))
        for field, option in _SERVE_OPTIONS.items()
    }
    settings = _load_settings({key: value for key, value in overrides.items() if value is not None})
    from service.cluster import end_with_parent, node_count, serve_nodes
    from service.cores import use_realtime_scheduling

    if settings.parent_pid is not None:
        end_with_parent(settings.parent_pid)
    try:  # before listening: a relay that cannot load its model must not look alive
        runtime = ModelRuntime(settings.model_path)
    except ModelFileError as exc:
        raise CommandError(str(exc)) from exc
    if settings.realtime_priority:  # before any thread starts: they all inherit it
        try:
            use_realtime_scheduling(settings.realtime_priority)
        except PermissionError:
            raise CommandError(
                f"PNR_REALTIME_PRIORITY={settings.realtime_priority}: SCHED_FIFO was refused "
                "(it needs root or CAP_SYS_NICE)"
            ) from None
    count = node_count(settings)
    if count > 1:  # each node loads its own copy
        del runtime
        try:
            return serve_nodes(settings, count)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
    if not serve(settings, runtime):
        raise CommandError("the relay failed to start (the log above says why)")
    return EXIT_OK


def _add_token(commands: argparse._SubParsersAction[_Parser]) -> None:
    parser = commands.add_parser(
        "token",
        help="mint a join token for a room",
        description="Print a token that lets its holder join ROOM, signed with PNR_TOKEN_SECRET "
        "(or --secret).",
    )
    parser.add_argument("room")
    parser.add_argument(
        "--ttl", type=_positive_seconds, default=3600.0, help="seconds it stays valid"
    )
    parser.add_argument("--name", help="display name carried in the token")
    parser.add_argument("--secret", help="signing secret (default: PNR_TOKEN_SECRET)")
    parser.set_defaults(handler=_run_token)


def _positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return seconds


def _run_token(args: argparse.Namespace) -> int:

    from service.relay import ROOM_NAME
    from service.tokens import mint_token

    secret = args.secret
    if secret is None:
        configured = _load_settings().token_secret
        secret = configured.get_secret_value() if configured is not None else None
    if not secret:
        raise CommandError("no secret: set PNR_TOKEN_SECRET or pass --secret")
    if not ROOM_NAME.fullmatch(args.room):
        raise CommandError(f"invalid room name {args.room!r} (1–64 of A-Z a-z 0-9 _ . -)")
    print(mint_token(secret, args.room, args.ttl, args.name))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
