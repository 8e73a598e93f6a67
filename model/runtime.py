"""Runtime inference with onnxruntime: the only module that imports it.

One :class:`ModelRuntime` holds a model's sessions (pinned to one intra-op thread, sequential,
no spinning: the server runs many of these side by side and must never busy-wait) and serves
any number of streams; :class:`ModelGainSource` is one stream's preallocated state, plugged
into the enhancer. ``step_batch`` runs one hop of several streams in one call over the batch
axis, ``step_two_hops`` two (a 20 ms packet's) with the model's two-hop graph.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dsp.constants import NUM_BANDS, NUM_FEATURES, SAMPLE_RATE_HZ

WEIGHTS_DIR = Path(__file__).parent / "weights"
INPUT_NAMES = ["features", "conv1_history", "conv2_history", "gru_state"]  # of every graph
DEFAULT_MODEL = WEIGHTS_DIR / "percepnet-int8.onnx"


class ModelFileError(ValueError):
    """The model file is missing, altered or not a PercepNet streaming graph."""


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def verify_sha256(path: Path) -> None:
    """Check ``path`` against the digest recorded beside it (``NAME.sha256``), if any."""
    digest_file = path.with_name(path.name + ".sha256")
    if not digest_file.exists():
        return
    expected = digest_file.read_text().split()[0]
    actual = sha256_of(path)
    if actual != expected:
        raise ModelFileError(
            f"{path}: SHA-256 {actual[:12]}… does not match the recorded "
            f"{expected[:12]}… (file altered or truncated)"
        )


def session_options() -> ort.SessionOptions:
    """One thread, sequential, no spinning."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def load_session(path: Path) -> ort.InferenceSession:
    """An onnxruntime session of ``path`` after its recorded digest is checked."""
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    verify_sha256(path)
    try:
        return ort.InferenceSession(
            str(path), session_options(), providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime raises its own exception types
        raise ModelFileError(f"{path}: not a loadable ONNX model ({error})") from error


def two_hop_twin(path: Path) -> Path:
    """Where the two-hop graph of a one-hop graph lives: ``NAME-2hop.onnx`` beside it."""
    return path.with_name(path.stem + "-2hop.onnx")


class ModelRuntime:
    """A loaded streaming model; thread-safe to call from several threads (onnxruntime is).

    Beside the one-hop graph it loads the graph's two-hop twin when one lies beside it
    (``percepnet-int8-2hop.onnx``: a 20 ms packet's two hops in one call, each weight read
    once; the exporter writes it only if it equals two one-hop calls bit for bit), and
    :meth:`step_two_hops` falls back to two one-hop calls without one (or with
    ``two_hops=False``: the same audio, one call per hop).
    """

    def __init__(self, path: Path | str = DEFAULT_MODEL, two_hops: bool = True) -> None:
        self.path = Path(path)
        self.session = load_session(self.path)
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        if set(inputs) != set(INPUT_NAMES):
            raise ModelFileError(
                f"{self.path}: inputs {sorted(inputs)} are not a PercepNet streaming graph"
            )
        if inputs["features"][1] != NUM_FEATURES:
            raise ModelFileError(
                f"{self.path}: reads {inputs['features'][1]} features per hop, this enhancer's"
                f" bands give {NUM_FEATURES} (a model made for another band layout)"
            )
        self.conv1_width = int(inputs["conv1_history"][1])
        self.conv2_width = int(inputs["conv2_history"][1])
        self.gru_width = int(inputs["gru_state"][1])  # every layer's state, side by side
        self._output_names = [o.name for o in self.session.get_outputs()]
        twin = two_hop_twin(self.path)
        use_twin = two_hops and twin.is_file()
        self.two_hop_session = self._load_two_hop(twin) if use_twin else None

    def _load_two_hop(self, path: Path) -> ort.InferenceSession:
        session = load_session(path)
        shapes = {i.name: i.shape for i in session.get_inputs()}
        expected = {
            "features": [2, "batch", NUM_FEATURES],
            "conv1_history": ["batch", self.conv1_width],
            "conv2_history": ["batch", self.conv2_width],
            "gru_state": ["batch", self.gru_width],
        }
        if shapes != expected:
            raise ModelFileError(
                f"{path}: not the two-hop graph of {self.path.name} (inputs {shapes})"
            )
        rng = np.random.default_rng(0)  # a few streams in their running range
        features = rng.uniform(-2.5, 2.5, (2, 3, NUM_FEATURES)).astype(np.float32)
        state = [rng.uniform(-0.9, 0.9, a.shape).astype(np.float32) for a in self.zero_state(3)]
        if not self.two_hop_graph_agrees(session, features, *state):
            raise ModelFileError(
                f"{path}: its outputs differ from two calls of {self.path.name} (the twin of "
                "other weights, left beside a replaced model?): export them again together, or "
                "remove it"
            )
        return session

    def two_hop_graph_agrees(
        self, two_hop: ort.InferenceSession, features: np.ndarray, *state: np.ndarray
    ) -> bool:
        """Whether the two-hop graph ``two_hop`` gives, for these inputs (``features`` [2, B,
        NUM_FEATURES]), what two calls of this runtime's one-hop graph give, bit for bit: the
        check the exporter makes before writing a twin, and the runtime before running one."""
        both = self._run(two_hop, features, *state)
        expected = self._one_hop_twice(features, *state)
        return all(np.array_equal(a, b) for a, b in zip(both, expected, strict=True))

    def zero_state(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """State of ``batch`` fresh streams."""
        return (
            np.zeros((batch, self.conv1_width), dtype=np.float32),
            np.zeros((batch, self.conv2_width), dtype=np.float32),
            np.zeros((batch, self.gru_width), dtype=np.float32),
        )

    def step_batch(
        self,
        features: np.ndarray,
        conv1_history: np.ndarray,
        conv2_history: np.ndarray,
        gru_state: np.ndarray,
    ) -> list[np.ndarray]:
        """One hop for every stream of the batch: [gains, strengths, *next state]."""
        return self._run(self.session, features, conv1_history, conv2_history, gru_state)

    def step_two_hops(
        self,
        features: np.ndarray,
        conv1_history: np.ndarray,
        conv2_history: np.ndarray,
        gru_state: np.ndarray,
    ) -> list[np.ndarray]:
        """Two hops for every stream of the batch, ``features`` [2, B, NUM_FEATURES]:
        [gains [2, B, NUM_BANDS], strengths [2, B, NUM_BANDS], *state after the second]."""
        state = (conv1_history, conv2_history, gru_state)
        if self.two_hop_session is None:
            return self._one_hop_twice(features, *state)
        return self._run(self.two_hop_session, features, *state)

    def _one_hop_twice(self, features: np.ndarray, *state: np.ndarray) -> list[np.ndarray]:
        first = self.step_batch(features[0], *state)
        second = self.step_batch(features[1], *first[2:])
        return [np.stack([first[0], second[0]]), np.stack([first[1], second[1]]), *second[2:]]

    def _run(self, session: ort.InferenceSession, *feeds: np.ndarray) -> list[np.ndarray]:
        return session.run(self._output_names, dict(zip(INPUT_NAMES, feeds, strict=True)))


class ModelGainSource:
    """One stream's recurrent state over a shared :class:`ModelRuntime` (a ``GainSource``)."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime
        self._features = np.zeros((1, NUM_FEATURES), dtype=np.float32)
        self._pair_features = np.zeros((2, 1, NUM_FEATURES), dtype=np.float32)
        self._conv1, self._conv2, self._gru = runtime.zero_state(1)

    def reset(self) -> None:
        """Start a new stream."""
        self.forget_input_history()
        self._gru[...] = 0

    def forget_input_history(self) -> None:
        """Clear the convolutions' history of recent frames, keeping the recurrent state."""
        self._conv1[...] = 0
        self._conv2[...] = 0

    def gains_for(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gains and strengths for the frame two hops before ``features``."""
        self._features[0] = features
        gains, strengths = step_sources([self], self._features)
        return gains[0], strengths[0]

    def gains_for_pair(
        self, features_a: np.ndarray, features_b: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`gains_for` of two consecutive hops in one call: [2, NUM_BANDS] each."""
        self._pair_features[0, 0] = features_a
        self._pair_features[1, 0] = features_b
        gains, strengths = step_sources_two_hops([self], self._pair_features)
        return gains[:, 0], strengths[:, 0]


def primed_gain_source(
    runtime: ModelRuntime, signal: np.ndarray, seconds: float
) -> ModelGainSource:
    """A stream's gain source whose recurrent state has already heard the first ``seconds`` of
    ``signal`` (48 kHz mono), for a file, where the whole signal is at hand: speech at its very
    start then meets a network that knows the file's voice and noise, not an empty state. The
    convolutions' short input history is cleared again, so the real pass starts where the
    signal does. The relay cannot do this (it would read ahead); 0 seconds: a fresh source."""
    from dsp.offline import enhance_signal

    source = ModelGainSource(runtime)
    if seconds > 0:
        enhance_signal(signal[: round(seconds * SAMPLE_RATE_HZ)], source)  # output unused
        source.forget_input_history()
    return source


def _stacked_state(sources: list[ModelGainSource]) -> list[np.ndarray]:
    if len(sources) == 1:  # a source's own state is already a batch of one
        return [sources[0]._conv1, sources[0]._conv2, sources[0]._gru]
    return [
        np.concatenate([s._conv1 for s in sources]),
        np.concatenate([s._conv2 for s in sources]),
        np.concatenate([s._gru for s in sources]),
    ]


def _keep_rows(
    sources: list[ModelGainSource], conv1: np.ndarray, conv2: np.ndarray, gru: np.ndarray
) -> None:
    for index, source in enumerate(sources):  # each keeps its row of the new state: no copy
        row = slice(index, index + 1)
        source._conv1, source._conv2, source._gru = conv1[row], conv2[row], gru[row]


def step_sources(
    sources: list[ModelGainSource], features: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One hop for several streams of the same runtime in one call over the batch axis.

    ``features`` is [B, NUM_FEATURES], row i for ``sources[i]``; each source's state advances
    exactly as ``gains_for`` would advance it, bit for bit (the int8 graph quantises each row on
    its own, ``model.quantise``). Returns gains and strengths, [B, NUM_BANDS] each.
    """
    if not sources:
        empty = np.zeros((0, NUM_BANDS), dtype=np.float32)
        return empty, empty.copy()
    gains, strengths, conv1, conv2, gru = sources[0].runtime.step_batch(
        np.ascontiguousarray(features, dtype=np.float32), *_stacked_state(sources)
    )
    _keep_rows(sources, conv1, conv2, gru)
    return gains, strengths


def step_sources_two_hops(
    sources: list[ModelGainSource], features: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Two consecutive hops for several streams in one call (:meth:`ModelRuntime.step_two_hops`).

    ``features`` is [2, B, NUM_FEATURES] (hop, stream); each source's state advances exactly as
    two ``gains_for`` calls would advance it, bit for bit. Returns gains and strengths,
    [2, B, NUM_BANDS] each.
    """
    if not sources:
        empty = np.zeros((2, 0, NUM_BANDS), dtype=np.float32)
        return empty, empty.copy()
    gains, strengths, conv1, conv2, gru = sources[0].runtime.step_two_hops(
        np.ascontiguousarray(features, dtype=np.float32), *_stacked_state(sources)
    )
    _keep_rows(sources, conv1, conv2, gru)
    return gains, strengths
